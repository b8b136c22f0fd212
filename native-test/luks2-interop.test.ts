// LUKS2 interop with the real cryptsetup: we open its images, it opens ours, keys and sector tweaks agree.
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { open, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { must, run, type RunResult } from './helpers/cli.js';
import { decryptSector, dumpVolumeKey } from './helpers/cryptsetup.js';
import { xtsInPlace } from '../src/crypto/xts.js';
import { AtrestError } from '../src/errors/index.js';
import {
  addKeyslot,
  formatLuks2,
  readLuks2,
  removeKeyslot,
  resolvedDataSize,
  unlockVolumeKey,
  type Luks2Metadata,
} from '../src/luks2/index.js';
import { useTempDir } from '../src/test-helpers/temp-dir.test-helper.js';

async function cs(args: string[], timeoutMs?: number): Promise<RunResult> {
  return must('cryptsetup', args, timeoutMs === undefined ? {} : { timeoutMs });
}

const haveCryptsetup = (await run('cryptsetup', ['--version']).catch(() => ({ code: 127 }))).code === 0;
const FAST_ARGON = ['--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--iter-time', '100'];
const PBKDF2_FAST = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

const dir = useTempDir('atrest-luks2-native-', { perTest: true });
let keyFile: string;
const passphrase = Buffer.from('interop passphrase\n');

beforeEach(async () => {
  keyFile = join(dir(), 'key');
  await writeFile(keyFile, passphrase);
});

/** The volume key according to cryptsetup. */
function dumpedKey(image: string, header?: string, key = keyFile): Promise<Buffer> {
  return dumpVolumeKey(dir(), image, key, header);
}

/**
 * Encrypts a pattern into the first sectors of the data segment with our XTS and our unlocked key,
 * then decrypts each sector independently with OpenSSL aes-256-xts under cryptsetup's key.
 */
async function checkDataSectors(meta: Luks2Metadata, ourKey: Buffer, theirKey: Buffer): Promise<void> {
  const sectors = 8;
  const plain = Buffer.alloc(sectors * meta.sectorSize);
  for (let i = 0; i < plain.length; i++) plain[i] = (i * 7 + (i >> 9)) & 0xff;
  const startSector = 3; // not the first: the tweak must follow the position
  const byteOff = startSector * meta.sectorSize;
  const cipher = Buffer.from(plain);
  xtsInPlace('encrypt', ourKey, cipher, meta.sectorSize, meta.ivTweak + byteOff / 512);
  const fh = await open(meta.imagePath, 'r+');
  await fh.write(cipher, 0, cipher.length, meta.dataOffset + byteOff);
  const back = Buffer.alloc(cipher.length);
  await fh.read(back, 0, back.length, meta.dataOffset + byteOff);
  await fh.close();
  for (let s = 0; s < sectors; s++) {
    const tweak = meta.ivTweak + (byteOff + s * meta.sectorSize) / 512;
    const out = decryptSector(theirKey, back.subarray(s * meta.sectorSize, (s + 1) * meta.sectorSize), tweak);
    expect(out.equals(plain.subarray(s * meta.sectorSize, (s + 1) * meta.sectorSize))).toBe(true);
  }
}

describe.skipIf(!haveCryptsetup)('LUKS2 interop with cryptsetup', () => {
  for (const sectorSize of [512, 4096]) {
    it(`opens a cryptsetup argon2id image with ${sectorSize}-byte sectors`, async () => {
      const img = join(dir(), 'cs.img');
      await writeFile(img, '');
      await truncate(img, 32 << 20);
      await cs([
        'luksFormat',
        '--type',
        'luks2',
        '--batch-mode',
        '--key-file',
        keyFile,
        '--sector-size',
        String(sectorSize),
        ...FAST_ARGON,
        img,
      ]);
      const meta = await readLuks2(img);
      expect(meta).toMatchObject({ sectorSize, dataOffset: 16 << 20, dataSize: 'dynamic', hdrSize: 16384 });
      expect(meta.keyslots[0]?.kdf).toBe('argon2id');
      expect(resolvedDataSize(meta, (await stat(img)).size)).toBe(16 << 20);
      const { volumeKey, keyslot } = await unlockVolumeKey(meta, passphrase);
      expect(keyslot).toBe(0);
      const theirs = await dumpedKey(img);
      expect(volumeKey.equals(theirs)).toBe(true);
      await checkDataSectors(meta, volumeKey, theirs);
      await expect(unlockVolumeKey(meta, Buffer.from('interop passphrase'))).rejects.toMatchObject({
        code: 'WRONG_KEY',
      });
    });
  }

  it('opens a cryptsetup image made with the real defaults (argon2id, ~1 GiB)', async () => {
    const img = join(dir(), 'defaults.img');
    await writeFile(img, '');
    await truncate(img, 20 << 20);
    await cs(['luksFormat', '--type', 'luks2', '--batch-mode', '--key-file', keyFile, img], 170_000);
    const meta = await readLuks2(img);
    const { volumeKey } = await unlockVolumeKey(meta, passphrase);
    expect(volumeKey.equals(await dumpedKey(img))).toBe(true);
  }, 600_000);

  it('opens larger metadata areas, pbkdf2 hashes and a labelled image; our keyslot edits stay valid for cryptsetup', async () => {
    const img = join(dir(), 'big.img');
    await writeFile(img, '');
    await truncate(img, 40 << 20);
    await cs([
      'luksFormat',
      '--type',
      'luks2',
      '--batch-mode',
      '--key-file',
      keyFile,
      '--luks2-metadata-size',
      '64k',
      '--luks2-keyslots-size',
      '2m',
      '--label',
      'big',
      '--subsystem',
      'sub',
      ...PBKDF2_FAST,
      '--hash',
      'sha512',
      img,
    ]);
    const meta = await readLuks2(img);
    expect(meta).toMatchObject({
      hdrSize: 65536,
      jsonSize: 65536 - 4096,
      label: 'big',
      subsystem: 'sub',
      keyslotsSize: 2 << 20,
    });
    const { volumeKey } = await unlockVolumeKey(meta, passphrase);
    expect(volumeKey.equals(await dumpedKey(img))).toBe(true);
    // our writer on their image: add a keyslot, cryptsetup opens with it; remove theirs
    const key2 = join(dir(), 'key2');
    await writeFile(key2, 'second key');
    const id = await addKeyslot(meta, volumeKey, Buffer.from('second key'), {
      kdf: { type: 'pbkdf2', iterations: 1000 },
    });
    expect(id).toBe(1);
    await cs(['open', '--test-passphrase', '--key-file', key2, img]);
    await removeKeyslot(meta, 0);
    const dump = (await cs(['luksDump', img])).stdout;
    expect(dump).not.toMatch(/^\s+0: luks2/m);
    expect(dump).toMatch(/^\s+1: luks2/m);
    expect(dump).toMatch(/Label:\s+big/);
    expect(
      (await run('cryptsetup', ['open', '--test-passphrase', '--key-file', keyFile, img])).code,
    ).not.toBe(0);
    expect((await dumpedKey(img, undefined, key2)).equals(volumeKey)).toBe(true);
  });

  for (const [detached, sectorSize] of [
    [false, 512],
    [false, 4096],
    [true, 512],
    [true, 4096],
  ] as const) {
    it(`cryptsetup opens our ${detached ? 'detached' : 'attached'} format with ${sectorSize}-byte sectors`, async () => {
      const img = join(dir(), 'ours.img');
      const hdr = detached ? join(dir(), 'ours.hdr') : undefined;
      const volumeKey = randomBytes(64);
      await formatLuks2({
        imagePath: img,
        ...(hdr ? { headerPath: hdr } : {}),
        dataSize: 4 << 20,
        sectorSize,
        label: 'ours',
        passphrase,
        pbkdf2Iterations: 1000,
        volumeKey,
      });
      const h = hdr ? ['--header', hdr] : [];
      const dump = await cs(['luksDump', ...h, hdr ?? img]);
      expect(dump.stdout).toMatch(new RegExp(`sector: ${sectorSize} \\[bytes\\]`));
      expect(dump.stdout).toMatch(/Area offset:32768 \[bytes\]/);
      expect(dump.stdout).toMatch(/Area length:258048 \[bytes\]/);
      await cs(['open', '--test-passphrase', '--key-file', keyFile, ...h, img]);
      const theirs = await dumpedKey(img, hdr);
      expect(theirs.equals(volumeKey)).toBe(true);
      const meta = await readLuks2(hdr ?? img, { imagePath: img });
      await checkDataSectors(meta, volumeKey, theirs);
    });
  }

  it('cryptsetup accepts our repair after we fell back to the secondary header', async () => {
    const img = join(dir(), 'r.img');
    await formatLuks2({ imagePath: img, dataSize: 1 << 20, passphrase, pbkdf2Iterations: 1000 });
    const fh = await open(img, 'r+');
    await fh.write(Buffer.from('garbage'), 0, 7, 4096 + 10);
    await fh.close();
    const meta = await readLuks2(img);
    expect(meta.damaged).toEqual(['primary']);
    const { volumeKey } = await unlockVolumeKey(meta, passphrase);
    await addKeyslot(meta, volumeKey, Buffer.from('x'), { kdf: { type: 'pbkdf2', iterations: 1000 } });
    const dump = (await cs(['luksDump', '--debug', img])).stdout;
    expect(dump).toMatch(/Epoch:\s+2/);
    expect(dump).not.toMatch(/checksum error/);
    await cs(['open', '--test-passphrase', '--key-file', keyFile, img]);
  });

  it('refuses a cryptsetup reencryption left in progress and LUKS1 images', async () => {
    const img = join(dir(), 're.img');
    await writeFile(img, '');
    await truncate(img, 40 << 20);
    await cs(['luksFormat', '--type', 'luks2', '--batch-mode', '--key-file', keyFile, ...PBKDF2_FAST, img]);
    const init = await run('cryptsetup', [
      'reencrypt',
      '--init-only',
      '--batch-mode',
      '--key-file',
      keyFile,
      ...PBKDF2_FAST,
      img,
    ]);
    if (init.code === 0) {
      const err = await readLuks2(img).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AtrestError);
      expect(err).toMatchObject({ code: 'REENCRYPT_IN_PROGRESS' });
      expect((err as AtrestError).message).toContain(img);
    }
    const l1 = join(dir(), 'l1.img');
    await writeFile(l1, '');
    await truncate(l1, 8 << 20);
    await cs([
      'luksFormat',
      '--type',
      'luks1',
      '--batch-mode',
      '--key-file',
      keyFile,
      '--iter-time',
      '10',
      l1,
    ]);
    const l1err = await readLuks2(l1).catch((e: unknown) => e);
    expect(l1err).toMatchObject({ code: 'NOT_LUKS2' });
    expect((l1err as AtrestError).message).toMatch(/LUKS1/);
  });
});
