// What the native tests ask of the real cryptsetup and of an independent (OpenSSL, per-sector) decryptor.
import { createDecipheriv, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
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

/** Decrypts one sector with OpenSSL aes-256-xts, plain64 tweak (512-byte units), one cipher per sector. */
export function decryptSector(volumeKey: Buffer, ciphertext: Buffer, tweak: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(BigInt(tweak));
  const d = createDecipheriv('aes-256-xts', volumeKey, iv);
  return Buffer.concat([d.update(ciphertext), d.final()]);
}
