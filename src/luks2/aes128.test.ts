// LUKS2 volumes with 256-bit (AES-128-XTS) volume keys: read, unlocked and edited; never created.
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { xtsInPlace } from '../crypto/xts.js';
import { craftHeaderJson } from './craft-header.test-helper.js';
import {
  addKeyslot,
  formatLuks2,
  readLuks2,
  replaceVolumeKey,
  unlockVolumeKey,
  type JsonObject,
  type Luks2Metadata,
} from './index.js';
import { keyslotHandler } from './keyslot-luks2.js';
import { areaIo } from './unlock.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const PASS = Buffer.from('aes-128-xts passphrase');
const FAST = { type: 'pbkdf2', iterations: 1000 } as const;
const dir = useTempDir('atrest-aes128-', { perTest: true });

function key32(): Buffer {
  const k = randomBytes(32);
  k[0] = (k[16] ?? 0) ^ 1;
  return k;
}

/** An atrest-formatted image switched to a 256-bit volume key (the way cryptsetup --key-size 256 makes them). */
async function aes128Image(
  sectorSize: 512 | 4096,
): Promise<{ path: string; key: Buffer; meta: Luks2Metadata; slot: number }> {
  const path = join(dir(), `v${sectorSize}.img`);
  await formatLuks2({
    imagePath: path,
    dataSize: 1 << 20,
    sectorSize,
    passphrase: PASS,
    pbkdf2Iterations: 1000,
  });
  const key = key32();
  await replaceVolumeKey(await readLuks2(path), key, [{ passphrase: PASS, kdf: FAST }]);
  const meta = await readLuks2(path);
  const slot = meta.digest.keyslots[0];
  if (slot === undefined) throw new Error('no keyslot');
  return { path, key, meta, slot };
}

function keyslot(json: JsonObject, id: number): JsonObject {
  const ks = (json.keyslots as Record<string, JsonObject>)[String(id)];
  if (ks === undefined) throw new Error(`no keyslot ${id}`);
  return ks;
}

describe('256-bit XTS volume keys (AES-128-XTS)', () => {
  for (const sectorSize of [512, 4096] as const) {
    it(`reads and unlocks a ${sectorSize}-byte-sector volume with a 256-bit key`, async () => {
      const { key, meta } = await aes128Image(sectorSize);
      expect(meta).toMatchObject({ cipher: 'aes-xts-plain64', keySize: 32, sectorSize });
      const { volumeKey } = await unlockVolumeKey(meta, PASS);
      expect(volumeKey.equals(key)).toBe(true);
      // the key works for data like any XTS key
      xtsInPlace('encrypt', volumeKey, Buffer.alloc(sectorSize), sectorSize, 0);
    });
  }

  it('adds a keyslot for the 256-bit key, and unlocks a keyslot whose area key is 256 bits too', async () => {
    const { path, key, meta, slot } = await aes128Image(4096);
    const id = await addKeyslot(meta, key, Buffer.from('second'), { kdf: FAST });
    const again = await readLuks2(path);
    expect((await unlockVolumeKey(again, Buffer.from('second'), { keyslot: id })).volumeKey.equals(key)).toBe(
      true,
    );
    expect(again.keyslots.find((k) => k.id === id)?.keySize).toBe(32);
    // cryptsetup --key-size 256 encrypts the keyslot area with a 256-bit key as well
    let ks: JsonObject = {};
    await craftHeaderJson(path, (j) => {
      (keyslot(j, slot).area as JsonObject).key_size = 32;
      ks = structuredClone(keyslot(j, slot));
    });
    const fh = await open(path, 'r+');
    try {
      await keyslotHandler('luks2')?.setKey(ks, PASS, key, areaIo(fh, path));
    } finally {
      await fh.close();
    }
    const m = await readLuks2(path);
    expect(m.json.keyslots).toMatchObject({ [String(slot)]: { area: { key_size: 32 } } });
    const u = await unlockVolumeKey(m, PASS, { keyslot: slot });
    expect(u.volumeKey.equals(key)).toBe(true);
  });

  it('still refuses other key sizes, naming the size', async () => {
    const { path, slot } = await aes128Image(512);
    await craftHeaderJson(path, (j) => (keyslot(j, slot).key_size = 48));
    const err = await readLuks2(path).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNSUPPORTED' });
    expect((err as Error).message).toMatch(/384 bits/);
    await craftHeaderJson(path, (j) => {
      keyslot(j, slot).key_size = 32;
      (keyslot(j, slot).area as JsonObject).key_size = 24;
    });
    const m = await readLuks2(path);
    await expect(unlockVolumeKey(m, PASS)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
  });

  it('with a 256-bit key, other ciphers and integrity are refused as before', async () => {
    const { path } = await aes128Image(4096);
    const segment = (j: JsonObject): JsonObject =>
      (j.segments as Record<string, JsonObject>)['0'] as JsonObject;
    for (const [mutate, why] of [
      [(j: JsonObject) => (segment(j).encryption = 'serpent-xts-plain64'), /cipher serpent-xts-plain64/],
      [(j: JsonObject) => (segment(j).encryption = 'aes-cbc-essiv:sha256'), /cipher aes-cbc-essiv:sha256/],
      [(j: JsonObject) => (segment(j).encryption = 'aes-xts-essiv:sha256'), /cipher aes-xts-essiv:sha256/],
      [
        (j: JsonObject) => {
          segment(j).encryption = 'aes-xts-plain64';
          segment(j).integrity = {
            type: 'hmac(sha256)',
            journal_encryption: 'none',
            journal_integrity: 'none',
          };
        },
        /integrity/,
      ],
    ] as const) {
      await craftHeaderJson(path, mutate);
      const err = await readLuks2(path).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'UNSUPPORTED' });
      expect((err as Error).message).toMatch(why);
    }
  });

  it('format keeps creating AES-256-XTS only: a given 256-bit volume key is refused', async () => {
    const err = await formatLuks2({
      imagePath: join(dir(), 'no.img'),
      dataSize: 1 << 20,
      passphrase: PASS,
      pbkdf2Iterations: 1000,
      volumeKey: key32(),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNSUPPORTED' });
    expect((err as Error).message).toMatch(/AES-256-XTS/);
    const path = join(dir(), 'yes.img');
    await formatLuks2({ imagePath: path, dataSize: 1 << 20, passphrase: PASS, pbkdf2Iterations: 1000 });
    expect((await readLuks2(path)).keySize).toBe(64);
  });
});
