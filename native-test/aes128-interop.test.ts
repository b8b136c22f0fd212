// cryptsetup volumes with 256-bit XTS keys (AES-128-XTS, luksFormat --key-size 256) through the real CLI, daemon and FUSE.
import { randomBytes } from 'node:crypto';
import { open, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeAtrestEnv, must, run, type AtrestEnv } from './helpers/cli.js';
import { decryptRange, dumpVolumeKey, encryptSector } from './helpers/cryptsetup.js';
import { expectOneLineError, readDisk, writeDisk } from './helpers/disk.js';
import { readLuks2 } from '../src/luks2/index.js';

const haveCryptsetup = (await run('cryptsetup', ['--version']).catch(() => ({ code: 127 }))).code === 0;
const PBKDF2_FAST = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

let t: AtrestEnv;
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-aes128-');
});
afterEach(async () => {
  await t.cleanup();
});

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + (i >> 9) * 7 + seed) & 0xff;
  return b;
}

/** Writes `plain` at `pos` of the data segment as dm-crypt would under `volumeKey` (OpenSSL, per sector). */
async function encryptIntoImage(
  image: string,
  volumeKey: Buffer,
  dataOffset: number,
  sectorSize: number,
  pos: number,
  plain: Buffer,
): Promise<void> {
  const ct = Buffer.alloc(plain.length);
  for (let o = 0; o < plain.length; o += sectorSize) {
    encryptSector(volumeKey, plain.subarray(o, o + sectorSize), (pos + o) / 512).copy(ct, o);
  }
  const fh = await open(image, 'r+');
  try {
    await fh.write(ct, 0, ct.length, dataOffset + pos);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A 32 MiB cryptsetup LUKS2 volume with a 256-bit key of `cipher` and a random key file (cheap PBKDF2). */
async function cryptsetupVolume(
  name: string,
  cipher: string,
  extra: string[] = [],
): Promise<{ img: string; key: string }> {
  const key = join(t.dir, 'key');
  await writeFile(key, randomBytes(40), { mode: 0o600 });
  const img = join(t.dir, name);
  await writeFile(img, '');
  await truncate(img, 32 << 20);
  const format = ['luksFormat', '--type', 'luks2', '--batch-mode', '--key-file', key, '--cipher', cipher];
  await must('cryptsetup', [...format, '--key-size', '256', ...extra, ...PBKDF2_FAST, img]);
  return { img, key };
}

describe.skipIf(!haveCryptsetup)('cryptsetup luksFormat --key-size 256 (AES-128-XTS)', () => {
  for (const sectorSize of [512, 4096]) {
    it(`status and key list show it; atrest reads cryptsetup's data and cryptsetup's key reads atrest's writes (${sectorSize}-byte sectors)`, async () => {
      const { img, key } = await cryptsetupVolume('cs128.img', 'aes-xts-plain64', [
        '--sector-size',
        String(sectorSize),
      ]);
      const dump = (await must('cryptsetup', ['luksDump', img])).stdout;
      expect(dump).toMatch(/cipher:\s+aes-xts-plain64/);
      expect(dump).toMatch(/Cipher key:\s+256 bits/);
      const volumeKey = await dumpVolumeKey(t.dir, img, key);
      expect(volumeKey.length).toBe(32);
      const meta = await readLuks2(img);
      expect(meta).toMatchObject({ keySize: 32, sectorSize });
      const dataOffset = meta.dataOffset;

      // header-only commands show it
      let r = await t.atrest(['status', img, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({
        open: false,
        encryption: { cipher: 'aes-xts-plain64', keySource: 'passphrase' },
      });
      r = await t.atrest(['key', 'list', img, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ keyslots: [{ slot: 0, kind: 'passphrase' }] });

      // data "written by cryptsetup" (dm-crypt's layout, OpenSSL under cryptsetup's key), read by atrest
      const theirs = pattern(256 * 1024, 1);
      const theirPos = 2 << 20;
      await encryptIntoImage(img, volumeKey, dataOffset, sectorSize, theirPos, theirs);

      r = await t.atrest(['open', img, 'v128', '--key-file', key]);
      expect(r.code, r.stderr).toBe(0);
      const disk = r.stdout.trim().split('\n')[0] ?? '';
      expect(disk).toBe(join(t.runDir, 'v128'));
      const st = await t.atrest(['status', 'v128', '--json']);
      expect(JSON.parse(st.stdout)).toMatchObject({
        volumes: [{ name: 'v128', cipher: 'aes-xts-plain64', sectorSize, size: 16 << 20 }],
      });
      // big reads go through the worker pool, small ones inline
      expect((await readDisk(disk, theirPos, theirs.length)).equals(theirs)).toBe(true);
      expect((await readDisk(disk, theirPos + 8192, 4096)).equals(theirs.subarray(8192, 8192 + 4096))).toBe(
        true,
      );

      // atrest writes a pattern (big and small writes, not at the start), cryptsetup's key reads it
      const ours = pattern(1 << 20, 2);
      const ourPos = 5 << 20;
      await writeDisk(disk, ourPos, ours);
      const small = pattern(4096, 3);
      const smallPos = (9 << 20) + 4096;
      await writeDisk(disk, smallPos, small);
      expect((await readDisk(disk, ourPos, ours.length)).equals(ours)).toBe(true);
      r = await t.atrest(['close', 'v128']);
      expect(r.code, r.stderr).toBe(0);

      const back = await decryptRange(img, volumeKey, dataOffset, sectorSize, ourPos, ours.length);
      expect(back.equals(ours)).toBe(true);
      const backSmall = await decryptRange(img, volumeKey, dataOffset, sectorSize, smallPos, small.length);
      expect(backSmall.equals(small)).toBe(true);
      // cryptsetup's own data is untouched and its header still opens with the key
      expect(
        (await decryptRange(img, volumeKey, dataOffset, sectorSize, theirPos, theirs.length)).equals(theirs),
      ).toBe(true);
      await must('cryptsetup', ['open', '--test-passphrase', '--key-file', key, img]);
      expect((await dumpVolumeKey(t.dir, img, key)).equals(volumeKey)).toBe(true);
    });
  }

  it('a 256-bit aes-cbc-essiv volume is still refused, by status and open', async () => {
    const { img, key } = await cryptsetupVolume('cbc.img', 'aes-cbc-essiv:sha256');
    expectOneLineError(await t.atrest(['status', img]), 5, /cipher aes-cbc-essiv:sha256 is not supported/);
    expectOneLineError(
      await t.atrest(['open', img, 'cbc', '--key-file', key]),
      5,
      /cipher aes-cbc-essiv:sha256 is not supported/,
    );
  });

  it('atrest format keeps making 512-bit (AES-256-XTS) volumes', async () => {
    const key = join(t.dir, 'key');
    await writeFile(key, randomBytes(40), { mode: 0o600 });
    const img = join(t.dir, 'ours.img');
    const r = await t.atrest([
      'format',
      img,
      '--size',
      '8M',
      '--key-file',
      key,
      '--pbkdf-force-iterations',
      '1000',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const dump = (await must('cryptsetup', ['luksDump', img])).stdout;
    expect(dump).toMatch(/Cipher key:\s+512 bits/);
    expect(dump).not.toMatch(/Cipher key:\s+256 bits/);
    expect((await dumpVolumeKey(t.dir, img, key)).length).toBe(64);
  });
});
