import { Buffer } from 'node:buffer';
import { open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeBinaryHeader, setChecksum } from './binary-header.js';
import { readHeaders, writeAt } from './disk.js';
import { craftHeaderJson } from './craft-header.test-helper.js';
import {
  addKeyslot,
  DEFAULT_DATA_OFFSET,
  formatLuks2,
  readLuks2,
  removeKeyslot,
  resolvedDataSize,
  setToken,
  unlockVolumeKey,
  type JsonObject,
} from './index.js';
import { rejects } from '../errors/rejects.test-helper.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const PASS = Buffer.from('correct horse battery staple');
const FAST = 1000;
const dir = useTempDir('atrest-luks2-', { perTest: true });

async function fresh(name = 'a.img', sectorSize: 512 | 4096 = 4096): Promise<string> {
  const path = join(dir(), name);
  await formatLuks2({
    imagePath: path,
    dataSize: 1 << 20,
    sectorSize,
    passphrase: PASS,
    pbkdf2Iterations: FAST,
  });
  return path;
}

async function poke(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+');
  await writeAt(fh, offset, bytes);
  await fh.close();
}

function segment0(json: JsonObject): JsonObject {
  return (json.segments as Record<string, JsonObject>)['0'] as JsonObject;
}

describe('formatLuks2 / readLuks2 / unlockVolumeKey', () => {
  it('formats in the cryptsetup layout and unlocks', async () => {
    const key = Buffer.alloc(64);
    for (let i = 0; i < 64; i++) key[i] = i;
    const path = join(dir(), 'a.img');
    const r = await formatLuks2({
      imagePath: path,
      dataSize: 1 << 20,
      passphrase: PASS,
      pbkdf2Iterations: FAST,
      label: 'data',
      volumeKey: key,
    });
    expect((await stat(path)).size).toBe(DEFAULT_DATA_OFFSET + (1 << 20));
    const meta = await readLuks2(path);
    expect(meta).toMatchObject({
      uuid: r.uuid,
      label: 'data',
      cipher: 'aes-xts-plain64',
      sectorSize: 4096,
      ivTweak: 0,
      dataOffset: 16777216,
      dataSize: 'dynamic',
      hdrSize: 16384,
      jsonSize: 12288,
      keyslotsSize: 16744448,
      seqid: 1n,
      damaged: [],
    });
    expect(meta.keyslots).toEqual([
      expect.objectContaining({ id: 0, type: 'luks2', kdf: 'pbkdf2', priority: 1, keySize: 64 }),
    ]);
    expect(meta.keyslots[0]?.area).toMatchObject({ offset: 32768, size: 258048 });
    expect(resolvedDataSize(meta, meta.imageSize)).toBe(1 << 20);
    const u = await unlockVolumeKey(meta, PASS);
    expect(u.keyslot).toBe(0);
    expect(u.volumeKey.equals(key)).toBe(true);
    // no leftovers from the atomic create
    expect(await readdir(dir())).toEqual(['a.img']);
  });

  it('says WRONG_KEY without key material', async () => {
    const path = await fresh();
    const meta = await readLuks2(path);
    const e = await rejects(
      unlockVolumeKey(meta, Buffer.from('nope')),
      'WRONG_KEY',
      /no key slot matches this key file/,
    );
    expect(e.message).toContain(path);
    expect(e.message).not.toContain('nope');
  });

  it('refuses to format over an existing file', async () => {
    const path = await fresh();
    await rejects(
      formatLuks2({ imagePath: path, dataSize: 4096, passphrase: PASS, pbkdf2Iterations: FAST }),
      'FILE_EXISTS',
    );
    await rejects(
      formatLuks2({ imagePath: join(dir(), 'x'), dataSize: 1000, passphrase: PASS, pbkdf2Iterations: FAST }),
      'USAGE',
    );
  });

  it('formats a detached header with the data at offset 0', async () => {
    const img = join(dir(), 'd.img');
    const hdr = join(dir(), 'd.hdr');
    await formatLuks2({
      imagePath: img,
      headerPath: hdr,
      dataSize: 8192,
      sectorSize: 512,
      passphrase: PASS,
      pbkdf2Iterations: FAST,
    });
    expect((await stat(img)).size).toBe(8192);
    expect((await stat(hdr)).size).toBe(16 * 1024 * 1024);
    const meta = await readLuks2(hdr, { imagePath: img });
    expect(meta).toMatchObject({ headerPath: hdr, imagePath: img, dataOffset: 0, sectorSize: 512 });
    expect(resolvedDataSize(meta, 8192)).toBe(8192);
    expect((await unlockVolumeKey(meta, PASS)).volumeKey.length).toBe(64);
    await rejects(readLuks2(img), 'NOT_LUKS2');
  });

  it('adds an argon2id keyslot, removes the old one, keeps unknown fields', async () => {
    const path = await fresh();
    await craftHeaderJson(path, (j) => {
      j['x-extra'] = { keep: 'me' };
      segment0(j)['x-seg'] = 1;
    });
    const meta = await readLuks2(path);
    const { volumeKey } = await unlockVolumeKey(meta, PASS);
    const pass2 = Buffer.from('second');
    const id = await addKeyslot(meta, volumeKey, pass2, {
      kdf: { type: 'argon2id', time: 1, memoryKiB: 1024, cpus: 1 },
    });
    expect(id).toBe(1);
    const again = await readLuks2(path);
    expect(again.seqid).toBe(meta.seqid);
    expect(again.keyslots.map((k) => [k.id, k.kdf, k.area.offset])).toEqual([
      [0, 'pbkdf2', 32768],
      [1, 'argon2id', 32768 + 258048],
    ]);
    expect(again.json['x-extra']).toEqual({ keep: 'me' });
    expect(segment0(again.json)['x-seg']).toBe(1);
    const u = await unlockVolumeKey(again, pass2);
    expect(u.keyslot).toBe(1);
    expect(u.volumeKey.equals(volumeKey)).toBe(true);
    await rejects(removeKeyslot(again, 5), 'USAGE');
    await removeKeyslot(again, 0);
    const after = await readLuks2(path);
    expect(after.keyslots.map((k) => k.id)).toEqual([1]);
    await rejects(unlockVolumeKey(after, PASS), 'WRONG_KEY');
    await rejects(removeKeyslot(after, 1), 'USAGE', /last/);
    await rejects(
      addKeyslot(after, Buffer.alloc(64, 7), PASS, { kdf: { type: 'pbkdf2', iterations: FAST } }),
      'WRONG_KEY',
    );
    // a specific keyslot; and priority 0 is only tried when named
    const id3 = await addKeyslot(after, volumeKey, PASS, {
      keyslot: 3,
      priority: 0,
      kdf: { type: 'pbkdf2', iterations: FAST },
    });
    expect(id3).toBe(3);
    await rejects(unlockVolumeKey(after, PASS), 'WRONG_KEY');
    expect((await unlockVolumeKey(after, PASS, { keyslot: 3 })).keyslot).toBe(3);
  });
});

describe('header copies', () => {
  it('prefers the copy with the higher seqid', async () => {
    const path = await fresh();
    await craftHeaderJson(path, (j) => (j['x-new'] = true), { seqid: 9n, only: 'secondary' });
    let meta = await readLuks2(path);
    expect(meta.usedCopy).toBe('secondary');
    expect(meta.seqid).toBe(9n);
    expect(meta.damaged).toEqual(['primary']);
    expect(meta.json['x-new']).toBe(true);
    await craftHeaderJson(path, (j) => (j['x-new'] = false), { seqid: 12n, only: 'primary' });
    meta = await readLuks2(path);
    expect(meta.usedCopy).toBe('primary');
    expect(meta.json['x-new']).toBe(false);
  });

  it('falls back to the secondary when the primary is damaged and repairs both on the next write', async () => {
    const path = await fresh();
    await poke(path, 4096 + 2, Buffer.from('XX')); // JSON area of the primary: checksum mismatch
    const meta = await readLuks2(path);
    expect(meta.usedCopy).toBe('secondary');
    expect(meta.damaged).toEqual(['primary']);
    expect(meta.warnings[0]).toMatch(
      /primary LUKS2 header .* damaged \(checksum mismatch\); using the secondary/,
    );
    const { volumeKey } = await unlockVolumeKey(meta, PASS);
    await addKeyslot(meta, volumeKey, Buffer.from('b'), { kdf: { type: 'pbkdf2', iterations: FAST } });
    expect(meta.damaged).toEqual([]);
    const fh = await open(path, 'r');
    const state = await readHeaders(fh, path);
    await fh.close();
    expect(state.primary.ok && state.secondary.ok).toBe(true);
    expect(state.chosen.bin.seqid).toBe(2n);
    expect((await readLuks2(path)).damaged).toEqual([]);
  });

  it('finds the secondary when the primary magic is wiped', async () => {
    const path = await fresh();
    await poke(path, 0, Buffer.alloc(4096));
    const meta = await readLuks2(path);
    expect(meta.usedCopy).toBe('secondary');
    expect((await unlockVolumeKey(meta, PASS)).keyslot).toBe(0);
  });

  it('refuses a header changed since it was read', async () => {
    const path = await fresh();
    const meta = await readLuks2(path);
    const other = await readLuks2(path);
    const { volumeKey } = await unlockVolumeKey(meta, PASS);
    await addKeyslot(other, volumeKey, PASS, { kdf: { type: 'pbkdf2', iterations: FAST } });
    await rejects(
      addKeyslot(meta, volumeKey, PASS, { kdf: { type: 'pbkdf2', iterations: FAST } }),
      'IMAGE_BUSY',
    );
  });
});

describe('damaged and foreign images', () => {
  it('NOT_LUKS2 for empty files, other data and LUKS1', async () => {
    const empty = join(dir(), 'empty');
    await writeFile(empty, '');
    await rejects(readLuks2(empty), 'NOT_LUKS2', /empty/);
    const junk = join(dir(), 'junk');
    await writeFile(junk, Buffer.alloc(1 << 20, 0x41));
    await rejects(readLuks2(junk), 'NOT_LUKS2', /no LUKS header/);
    const luks1 = join(dir(), 'luks1');
    const b = Buffer.alloc(1 << 20);
    Buffer.from('LUKS\xba\xbe', 'latin1').copy(b);
    b.writeUInt16BE(1, 6);
    await writeFile(luks1, b);
    await rejects(readLuks2(luks1), 'NOT_LUKS2', /LUKS1/);
    await rejects(readLuks2(join(dir(), 'missing')), 'FILE_NOT_FOUND');
  });

  it('CORRUPT_HEADER when both copies fail their checksum', async () => {
    const path = await fresh();
    await poke(path, 4096 + 2, Buffer.from('X'));
    await poke(path, 16384 + 4096 + 2, Buffer.from('X'));
    const e = await rejects(readLuks2(path), 'CORRUPT_HEADER', /both LUKS2 header copies/);
    expect(e.message).toMatch(/checksum mismatch/);
    expect(e.hint).toMatch(/luksHeaderRestore/);
  });

  it('CORRUPT_HEADER for JSON that does not parse or validate', async () => {
    const bad: Array<[string, (j: JsonObject) => void, RegExp]> = [
      ['no config', (j) => delete j.config, /config/],
      ['wrong json_size', (j) => ((j.config as JsonObject).json_size = '4096'), /json_size/],
      ['numeric offset', (j) => (segment0(j).offset = 16777216), /offset/],
      [
        'area outside',
        (j) =>
          ((((j.keyslots as Record<string, JsonObject>)['0'] as JsonObject).area as JsonObject).offset =
            '4096'),
        /starts inside the LUKS2 headers/,
      ],
      [
        'digest to nowhere',
        (j) => (((j.digests as Record<string, JsonObject>)['0'] as JsonObject).keyslots = ['7']),
        /missing keyslot 7/,
      ],
      ['bad sector size', (j) => (segment0(j).sector_size = 1000), /sector_size/],
      [
        'segment in keyslots',
        (j) => (segment0(j).offset = '65536'),
        /does not fit between the headers and the data offset 65536/,
      ],
    ];
    for (const [name, mutate, why] of bad) {
      const path = await fresh(`${name}.img`);
      await craftHeaderJson(path, mutate);
      const e = await rejects(readLuks2(path), 'CORRUPT_HEADER');
      expect(e.message, name).toMatch(why);
    }
    // not JSON at all, with valid checksums
    const path = await fresh('garbage.img');
    const fh = await open(path, 'r+');
    for (const off of [0, 16384]) {
      const bin = encodeBinaryHeader({
        kind: off === 0 ? 'primary' : 'secondary',
        version: 2,
        hdrSize: 16384,
        seqid: 5n,
        label: '',
        checksumAlg: 'sha256',
        salt: Buffer.alloc(64, 1),
        uuid: 'u',
        subsystem: '',
        hdrOffset: off,
      });
      const area = Buffer.alloc(12288);
      area.write('{"keyslots": nope');
      setChecksum('sha256', bin, area);
      await writeAt(fh, off, Buffer.concat([bin, area]));
    }
    await fh.close();
    await rejects(readLuks2(path), 'CORRUPT_HEADER', /JSON/);
  });

  it('CORRUPT_HEADER for a wrong hdr_offset', async () => {
    const path = await fresh();
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(512n);
    await poke(path, 256, b);
    await poke(path, 16384 + 256, b);
    await rejects(readLuks2(path), 'CORRUPT_HEADER', /hdr_offset/);
  });

  it('TRUNCATED_IMAGE for images cut inside the header, keyslots or data', async () => {
    const a = await fresh('a.img');
    await truncate(a, 20000);
    await rejects(readLuks2(a), 'TRUNCATED_IMAGE');
    const b = await fresh('b.img');
    await truncate(b, 1 << 20);
    await rejects(readLuks2(b), 'TRUNCATED_IMAGE', /keyslots/);
    // header-only commands read a header whose data is missing (a header backup: the file ends at the
    // data offset) or cut short; only serving the data (resolvedDataSize) refuses, saying which
    const c = await fresh('c.img');
    await truncate(c, DEFAULT_DATA_OFFSET);
    const empty = await readLuks2(c);
    expect(empty.warnings).toEqual([expect.stringMatching(/holds no data/)]);
    expect(() => resolvedDataSize(empty, empty.imageSize)).toThrow(
      /holds no data: it is 16777216 bytes and its data segment starts at byte 16777216/,
    );
    const d = await fresh('d.img');
    await craftHeaderJson(d, (j) => (segment0(j).size = String(4 << 20)));
    const short = await readLuks2(d);
    expect(short.warnings).toEqual([expect.stringMatching(/shorter than its data segment/)]);
    expect(() => resolvedDataSize(short, short.imageSize)).toThrow(/shorter than its data segment/);
    const meta = await readLuks2(await fresh('e.img'));
    expect(() => resolvedDataSize(meta, 100)).toThrow(/holds no data/);
    expect(() => resolvedDataSize(meta, DEFAULT_DATA_OFFSET + 100)).toThrow(/shorter/);
  });
});

/** What cryptsetup leaves in a header while an online reencryption runs (all it validates). */
function reencryptionInProgress(j: JsonObject): void {
  (j.config as JsonObject).requirements = { mandatory: ['online-reencrypt-v2'] };
  (j.keyslots as JsonObject)['1'] = {
    type: 'reencrypt',
    key_size: 1,
    area: { type: 'none', offset: '290816', size: '4096' },
    mode: 'reencrypt',
    direction: 'forward',
  };
  (j.segments as JsonObject)['1'] = { ...segment0(j), flags: ['backup-previous'] };
  (j.segments as JsonObject)['2'] = { ...segment0(j), flags: ['backup-final'] };
  ((j.digests as Record<string, JsonObject>)['0'] as JsonObject).segments = ['0', '1', '2'];
}

describe('refusals', () => {
  const cases: Array<[string, (j: JsonObject) => void, string, RegExp]> = [
    [
      'cipher',
      (j) => (segment0(j).encryption = 'aes-cbc-essiv:sha256'),
      'UNSUPPORTED',
      /cipher aes-cbc-essiv:sha256/,
    ],
    [
      'integrity',
      (j) =>
        (segment0(j).integrity = {
          type: 'hmac(sha256)',
          journal_encryption: 'none',
          journal_integrity: 'none',
        }),
      'UNSUPPORTED',
      /integrity/,
    ],
    [
      'requirement',
      (j) => ((j.config as JsonObject).requirements = { mandatory: ['future-thing'] }),
      'UNSUPPORTED',
      /future-thing/,
    ],
    [
      "cryptsetup's reencryption in progress (requirement, reencrypt keyslot, backup segments)",
      reencryptionInProgress,
      'REENCRYPT_IN_PROGRESS',
      /reencryption is in progress \(requirement online-reencrypt-v2\)/,
    ],
    [
      'a reencryption without its requirement (cryptsetup refuses the header too)',
      (j) => {
        reencryptionInProgress(j);
        delete (j.config as JsonObject).requirements;
      },
      'CORRUPT_HEADER',
      /reencryption key slot without its requirement/,
    ],
    [
      'a backup segment as the only segment (cryptsetup refuses the header too)',
      (j) => (segment0(j).flags = ['backup-previous']),
      'CORRUPT_HEADER',
      /no regular segment/,
    ],
  ];
  for (const [name, mutate, code, why] of cases) {
    it(`refuses ${name}`, async () => {
      const path = await fresh();
      await craftHeaderJson(path, mutate);
      const e = await rejects(readLuks2(path), code, why);
      expect(e.message).toContain(path);
      expect(e.hint).toBeTruthy();
    });
  }

  it('skips keyslots it cannot use and says so when none is left', async () => {
    const path = await fresh();
    await craftHeaderJson(path, (j) => {
      const ks = (j.keyslots as Record<string, JsonObject>)['0'] as JsonObject;
      (ks.area as JsonObject).encryption = 'aes-cbc-plain64';
    });
    const meta = await readLuks2(path);
    await rejects(unlockVolumeKey(meta, PASS), 'UNSUPPORTED', /aes-cbc-plain64/);
  });
});

describe('golden image from cryptsetup 2.6.1', () => {
  const fixtures = new URL('./fixtures/', import.meta.url);
  it('opens the detached header with both keyslots (pbkdf2 and argon2id)', async () => {
    const hdr = new URL('golden-2.6.1.hdr', fixtures).pathname;
    const img = join(dir(), 'data.img');
    await writeFile(img, Buffer.alloc(1 << 20));
    const meta = await readLuks2(hdr, { imagePath: img });
    expect(meta).toMatchObject({ label: 'golden', sectorSize: 4096, dataOffset: 0, keyslotsSize: 524288 });
    expect(meta.keyslots.map((k) => k.kdf)).toEqual(['pbkdf2', 'argon2id']);
    const expected = (await readFile(new URL('golden.volume-key.hex', fixtures), 'utf8')).trim();
    const k0 = await unlockVolumeKey(meta, await readFile(new URL('golden.key', fixtures)));
    expect([k0.keyslot, k0.volumeKey.toString('hex')]).toEqual([0, expected]);
    const k1 = await unlockVolumeKey(meta, await readFile(new URL('golden2.key', fixtures)));
    expect([k1.keyslot, k1.volumeKey.toString('hex')]).toEqual([1, expected]);
  });
});

describe('tokens', () => {
  it('format writes token 0 for keyslot 0; addKeyslot adds a linked token in the same update', async () => {
    const path = join(dir(), 't.img');
    await formatLuks2({
      imagePath: path,
      dataSize: 1 << 20,
      passphrase: PASS,
      pbkdf2Iterations: FAST,
      token: { type: 'atrest-platform', x: 'one' },
    });
    const meta = await readLuks2(path);
    expect(meta.tokens.map((t) => [t.id, t.type, t.keyslots])).toEqual([[0, 'atrest-platform', [0]]]);
    const { volumeKey } = await unlockVolumeKey(meta, PASS);
    const seq = meta.seqid;
    const id = await addKeyslot(meta, volumeKey, Buffer.from('two'), {
      kdf: { type: 'pbkdf2', iterations: FAST },
      token: { type: 'atrest-cmk', x: 'two' },
    });
    const after = await readLuks2(path);
    expect(after.seqid).toBe(seq + 1n);
    expect(after.tokens.map((t) => [t.id, t.type, t.keyslots])).toEqual([
      [0, 'atrest-platform', [0]],
      [1, 'atrest-cmk', [id]],
    ]);
    // re-wrap: replace a token's fields, keyslot links kept
    await setToken(after, 1, { type: 'atrest-cmk', x: 'three' });
    const rewrapped = await readLuks2(path);
    expect(rewrapped.tokens[1]?.raw.x).toBe('three');
    expect(rewrapped.tokens[1]?.keyslots).toEqual([id]);
    // removing keyslot 0 drops its now-empty token of a listed type
    await removeKeyslot(rewrapped, 0, { dropTokenTypes: ['atrest-platform'] });
    const last = await readLuks2(path);
    expect(last.tokens.map((t) => [t.id, t.type, t.keyslots])).toEqual([[1, 'atrest-cmk', [id]]]);
    await setToken(last, 1, null);
    expect((await readLuks2(path)).tokens).toEqual([]);
    await rejects(setToken(last, 7, null), 'USAGE', /no token 7/);
    volumeKey.fill(0);
  });
});

describe('conversion requirement', () => {
  it('reads atrest-convert-v1 headers as converting, and refuses a newer conversion format in one line', async () => {
    const path = await fresh();
    await craftHeaderJson(
      path,
      (j) => ((j.config as JsonObject).requirements = { mandatory: ['atrest-convert-v1'] }),
    );
    const meta = await readLuks2(path);
    expect(meta.converting).toBe(true);
    await craftHeaderJson(
      path,
      (j) => ((j.config as JsonObject).requirements = { mandatory: ['atrest-convert-v2'] }),
    );
    await rejects(readLuks2(path), 'UNSUPPORTED', /started by a newer atrest/);
  });
});
