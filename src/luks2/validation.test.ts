// Header validation like cryptsetup's (the holes its test material found), typed errors for odd header values, foreign signatures, layouts atrest must not serve.
import { Buffer } from 'node:buffer';
import { open, readFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeBinaryHeader, setChecksum } from './binary-header.js';
import { readAt, readHeaders, writeAt } from './disk.js';
import {
  addKeyslot,
  formatLuks2,
  readLuks2,
  resolvedDataSize,
  unlockVolumeKey,
  writeMetadata,
  type JsonObject,
} from './index.js';
import { rejects } from '../errors/rejects.test-helper.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const PASS = Buffer.from('validation passphrase');
const dir = useTempDir('atrest-luks2-validate-', { perTest: true });

async function fresh(name: string): Promise<string> {
  const path = join(dir(), name);
  await formatLuks2({ imagePath: path, dataSize: 1 << 20, passphrase: PASS, pbkdf2Iterations: 1000 });
  return path;
}

/** Writes `text` (made from the current JSON) as the JSON of both header copies, valid checksums, seqid + 1. */
async function craftText(path: string, text: (json: JsonObject) => string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { chosen } = await readHeaders(fh, path);
    const hdrSize = chosen.bin.hdrSize;
    const area = Buffer.alloc(hdrSize - 4096);
    area.write(text(structuredClone(chosen.json)));
    for (const off of [0, hdrSize]) {
      const bin = encodeBinaryHeader({
        ...chosen.bin,
        kind: off === 0 ? 'primary' : 'secondary',
        seqid: chosen.bin.seqid + 1n,
        hdrOffset: off,
      });
      setChecksum('sha256', bin, area);
      await writeAt(fh, off, Buffer.concat([bin, area]));
    }
  } finally {
    await fh.close();
  }
}

const craft = (path: string, mutate: (j: JsonObject) => void): Promise<void> =>
  craftText(path, (j) => {
    mutate(j);
    return JSON.stringify(j);
  });

const keyslot = (j: JsonObject, id: string): JsonObject =>
  (j.keyslots as Record<string, JsonObject>)[id] as JsonObject;
const digest0 = (j: JsonObject): JsonObject => (j.digests as Record<string, JsonObject>)['0'] as JsonObject;
const segment0 = (j: JsonObject): JsonObject => (j.segments as Record<string, JsonObject>)['0'] as JsonObject;

/** A second keyslot (a copy of 0 in the next area) for digest tests. */
function secondKeyslot(j: JsonObject): void {
  const ks = structuredClone(keyslot(j, '0'));
  (ks.area as JsonObject).offset = String(32768 + 258048);
  (j.keyslots as JsonObject)['1'] = ks;
}

describe('holes cryptsetup closes: atrest refuses the same headers', () => {
  const cases: Array<[string, (j: JsonObject) => void, RegExp]> = [
    [
      'a key slot in no digest',
      (j) => {
        secondKeyslot(j);
      },
      /keyslot 1 is in 0 digests/,
    ],
    [
      'a key slot in two digests (two digests for one segment)',
      (j) => {
        secondKeyslot(j);
        digest0(j).keyslots = ['0', '1'];
        (j.digests as JsonObject)['1'] = { ...structuredClone(digest0(j)), keyslots: ['1'] };
      },
      /keyslot 1 is in 2 digests/,
    ],
    ['af.type not a string', (j) => ((keyslot(j, '0').af as JsonObject).type = 42), /af\.type/],
    ['af.type not luks1', (j) => ((keyslot(j, '0').af as JsonObject).type = 'luks9'), /af\.type "luks9"/],
    ['an empty key slot area', (j) => ((keyslot(j, '0').area as JsonObject).size = '0'), /is empty/],
    [
      'two overlapping segments',
      (j) => {
        segment0(j).size = '1048576';
        (j.segments as JsonObject)['1'] = { ...structuredClone(segment0(j)) };
        digest0(j).segments = ['0', '1'];
      },
      /segments 1 and 0 overlap|segments 0 and 1 overlap/,
    ],
    ['a crypt segment in no digest', (j) => (digest0(j).segments = []), /segment 0 is in no digest/],
    ['a zero sector size', (j) => (segment0(j).sector_size = 0), /sector_size 0/],
    ['a PBKDF2 KDF with a stray field', (j) => ((keyslot(j, '0').kdf as JsonObject).hash = 7), /kdf\.hash/],
  ];
  for (const [name, mutate, why] of cases) {
    it(`CORRUPT_HEADER for ${name}, on read and on write`, async () => {
      const path = await fresh('a.img');
      const before = await readLuks2(path);
      await craft(path, mutate);
      await rejects(readLuks2(path), 'CORRUPT_HEADER', why);
      // the same JSON is never written either
      const json = structuredClone(before.json);
      mutate(json);
      const good = await fresh('b.img');
      const meta = await readLuks2(good);
      await expect(writeMetadata(meta, json)).rejects.toThrow(/refusing to write invalid metadata/);
      expect((await readLuks2(good)).seqid).toBe(meta.seqid);
    });
  }

  it('float literals where cryptsetup wants integers are refused; leftover KDF fields are dropped like cryptsetup', async () => {
    const path = await fresh('a.img');
    await craftText(path, (j) => JSON.stringify(j).replace('"key_size":64,', '"key_size":64.0,'));
    await rejects(readLuks2(path), 'CORRUPT_HEADER', /key_size is missing or not an integer/);
    const ok = await fresh('b.img');
    await craft(ok, (j) => ((keyslot(j, '0').kdf as JsonObject).time = 4)); // argon2 leftover in a pbkdf2 slot
    const meta = await readLuks2(ok);
    expect((keyslot(meta.json, '0').kdf as JsonObject).time).toBeUndefined();
    expect((await unlockVolumeKey(meta, PASS)).keyslot).toBe(0);
  });

  it('accepts what cryptsetup accepts: key slot and token ids past 31, a 1536-byte sector size (unsupported, not corrupt)', async () => {
    const path = await fresh('a.img');
    await craft(path, (j) => {
      (j.tokens as JsonObject)['40'] = { type: 'x-other', keyslots: ['0'] };
    });
    expect((await readLuks2(path)).tokens.map((t) => t.id)).toEqual([40]);
    await craft(path, (j) => (segment0(j).sector_size = 1536));
    await rejects(readLuks2(path), 'UNSUPPORTED', /sector size 1536/);
  });
});

describe('typed errors for header values, never INTERNAL', () => {
  it('PBKDF2 iterations in (2^31-1, 2^32-1] in a key slot: the slot is unusable (UNSUPPORTED), no RangeError', async () => {
    const path = await fresh('a.img');
    await craft(path, (j) => ((keyslot(j, '0').kdf as JsonObject).iterations = 0xffff_ffff));
    const meta = await readLuks2(path);
    await rejects(
      unlockVolumeKey(meta, PASS),
      'UNSUPPORTED',
      /PBKDF2 iterations 4294967295 is outside cryptsetup's limits \(1 to 2147483647\)/,
    );
    await rejects(unlockVolumeKey(meta, PASS, { keyslot: 0 }), 'UNSUPPORTED', /iterations/);
  });

  it('PBKDF2 iterations 2^32-1 or a shake256 hash in the digest: UNSUPPORTED', async () => {
    const a = await fresh('a.img');
    await craft(a, (j) => (digest0(j).iterations = 0xffff_ffff));
    await rejects(readLuks2(a), 'UNSUPPORTED', /iterations 4294967295/);
    const b = await fresh('b.img');
    await craft(b, (j) => (digest0(j).hash = 'shake256'));
    await rejects(readLuks2(b), 'UNSUPPORTED', /digest hash shake256 is not available/);
    const c = await fresh('c.img');
    await craft(c, (j) => ((keyslot(j, '0').kdf as JsonObject).hash = 'shake256'));
    await rejects(unlockVolumeKey(await readLuks2(c), PASS), 'UNSUPPORTED', /PBKDF2 hash shake256/);
  });

  it('a token nested 5000 deep: CORRUPT_HEADER (cryptsetup cannot parse it either); 31 levels in all still parse', async () => {
    const nest = (n: number): string => '['.repeat(n) + '1' + ']'.repeat(n);
    const nested = async (name: string, depth: number): Promise<string> => {
      const path = await fresh(name);
      await craftText(path, (j) => {
        (j.tokens as JsonObject)['0'] = { type: 'x', keyslots: [], n: 0 };
        return JSON.stringify(j).replace('"n":0', `"n":${nest(depth)}`);
      });
      return path;
    };
    await rejects(readLuks2(await nested('a.img', 5000)), 'CORRUPT_HEADER', /nests deeper than 31 levels/);
    // top object, tokens, token 0: 3 levels, so 28 more arrays is cryptsetup's limit (measured with 2.6.1)
    expect((await readLuks2(await nested('b.img', 28))).tokens[0]?.type).toBe('x');
    await rejects(readLuks2(await nested('c.img', 29)), 'CORRUPT_HEADER', /nests deeper/);
  });

  it('a segment size beyond 2^53 that cryptsetup accepts: UNSUPPORTED, not a damaged header', async () => {
    const path = await fresh('a.img');
    await craft(path, (j) => (segment0(j).size = '18446744073709547520')); // 2^64 - 4096
    const e = await rejects(readLuks2(path), 'UNSUPPORTED', /18446744073709547520 is beyond 2\^53 - 1/);
    expect(e.message).not.toMatch(/damaged/);
    const b = await fresh('b.img');
    await craft(b, (j) => (segment0(j).size = '18446744073709551616'));
    await rejects(readLuks2(b), 'CORRUPT_HEADER', /64-bit/);
  });

  it('config.json_size is compared with the JSON area size, and the message says so', async () => {
    const path = await fresh('a.img');
    // a consistent 32 KiB layout in a 16 KiB header: only the sizes disagree
    await craft(path, (j) => {
      (j.config as JsonObject).json_size = '28672';
      (j.config as JsonObject).keyslots_size = String((16 << 20) - 65536);
      (keyslot(j, '0').area as JsonObject).offset = '65536';
    });
    const e = await rejects(readLuks2(path), 'CORRUPT_HEADER');
    expect(e.message).toMatch(/config\.json_size 28672 does not match the JSON area size 12288/);
  });
});

describe('layouts atrest must not serve', () => {
  it('refuses a data segment at offset 0 of the file that holds the header', async () => {
    const path = await fresh('a.img');
    await craft(path, (j) => (segment0(j).offset = '0'));
    await rejects(readLuks2(path), 'UNSUPPORTED', /data segment starts at byte 0 of the same file/);
    await rejects(readLuks2(path, { imagePath: path }), 'UNSUPPORTED', /same file/);
    // as a detached header for another data file it is fine
    const data = join(dir(), 'data.img');
    await (await open(data, 'w')).close();
    await truncate(data, 1 << 20);
    expect((await readLuks2(path, { imagePath: data })).dataOffset).toBe(0);
  });

  it('reads a header whose data segment is empty; only serving the data refuses', async () => {
    const path = await fresh('a.img');
    await truncate(path, 16 << 20);
    const meta = await readLuks2(path);
    expect(meta.keyslots).toHaveLength(1);
    expect(() => resolvedDataSize(meta, meta.imageSize)).toThrow(/holds no data/);
  });
});

describe('foreign signatures: never used or repaired over', () => {
  const lvmLabel = (): Buffer => {
    const b = Buffer.alloc(512);
    b.write('LABELONE', 0, 'latin1');
    b.write('LVM2 001', 24, 'latin1');
    return b;
  };

  it('refuses the secondary header when the primary area holds an LVM2 PV label, and writes nothing', async () => {
    const path = await fresh('a.img');
    const fh = await open(path, 'r+');
    await writeAt(fh, 0, Buffer.alloc(4096));
    await writeAt(fh, 512, lvmLabel());
    await fh.close();
    const before = await readFile(path);
    const e = await rejects(
      readLuks2(path),
      'CORRUPT_HEADER',
      /primary LUKS2 header needs repair.*LVM2 physical volume label/,
    );
    expect(e.hint).toMatch(/cryptsetup repair/);
    expect((await readFile(path)).equals(before)).toBe(true);
  });

  it('a damaged primary without another signature is still recovered', async () => {
    const path = await fresh('a.img');
    const fh = await open(path, 'r+');
    await writeAt(fh, 0, Buffer.alloc(4096));
    await fh.close();
    expect((await readLuks2(path)).usedCopy).toBe('secondary');
  });

  it('a repair write refuses when a signature appeared after the read', async () => {
    const path = await fresh('a.img');
    let fh = await open(path, 'r+');
    await writeAt(fh, 0, Buffer.alloc(4096));
    await fh.close();
    const meta = await readLuks2(path);
    const { volumeKey } = await unlockVolumeKey(meta, PASS);
    fh = await open(path, 'r+');
    await writeAt(fh, 512, lvmLabel());
    await fh.close();
    await rejects(
      addKeyslot(meta, volumeKey, Buffer.from('x'), { kdf: { type: 'pbkdf2', iterations: 1000 } }),
      'CORRUPT_HEADER',
      /LVM2/,
    );
    fh = await open(path, 'r');
    expect((await readAt(fh, 512, 8)).toString('latin1')).toBe('LABELONE');
    await fh.close();
  });
});
