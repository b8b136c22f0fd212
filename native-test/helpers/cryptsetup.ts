// What the native tests ask of the real cryptsetup and of an independent (OpenSSL, per-sector) decryptor.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { must } from './cli.js';

/** The volume key according to `cryptsetup luksDump --dump-volume-key` (dumped into a fresh file in dir). */
export async function dumpVolumeKey(
  dir: string,
  image: string,
  keyFile: string,
  header?: string,
): Promise<Buffer> {
  const out = join(dir, `vk-${randomBytes(4).toString('hex')}.bin`);
  await must('cryptsetup', [
    'luksDump',
    '--dump-volume-key',
    '--volume-key-file',
    out,
    '--batch-mode',
    '--key-file',
    keyFile,
    ...(header ? ['--header', header] : []),
    image,
  ]);
  return readFile(out);
}

/** OpenSSL's XTS for a dm-crypt volume key: aes-128-xts for 256-bit keys, aes-256-xts for 512-bit keys. */
function xtsName(volumeKey: Buffer): 'aes-128-xts' | 'aes-256-xts' {
  if (volumeKey.length === 32) return 'aes-128-xts';
  if (volumeKey.length === 64) return 'aes-256-xts';
  throw new Error(`no XTS cipher for a ${volumeKey.length * 8}-bit key`);
}

function plain64(tweak: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(BigInt(tweak));
  return iv;
}

/** Decrypts one sector with OpenSSL aes-{128,256}-xts (by key size), plain64 tweak (512-byte units), one cipher per sector. */
export function decryptSector(volumeKey: Buffer, ciphertext: Buffer, tweak: number): Buffer {
  const d = createDecipheriv(xtsName(volumeKey), volumeKey, plain64(tweak));
  return Buffer.concat([d.update(ciphertext), d.final()]);
}

/** Encrypts one sector the way dm-crypt would (see decryptSector): data "written by cryptsetup". */
export function encryptSector(volumeKey: Buffer, plaintext: Buffer, tweak: number): Buffer {
  const c = createCipheriv(xtsName(volumeKey), volumeKey, plain64(tweak));
  return Buffer.concat([c.update(plaintext), c.final()]);
}

/** Decrypts `length` bytes of a data segment at `pos` from the image file with a volume key, sector by sector (plain64). */
export async function decryptRange(
  image: string,
  volumeKey: Buffer,
  dataOffset: number,
  sectorSize: number,
  pos: number,
  length: number,
): Promise<Buffer> {
  const fh = await open(image, 'r');
  try {
    const out = Buffer.alloc(length);
    for (let o = 0; o < length; o += sectorSize) {
      const ct = Buffer.alloc(sectorSize);
      await fh.read(ct, 0, sectorSize, dataOffset + pos + o);
      decryptSector(volumeKey, ct, (pos + o) / 512).copy(out, o);
    }
    return out;
  } finally {
    await fh.close();
  }
}
