// Unit-test helper (not built into dist/): reference XTS by Node's own OpenSSL, one data unit per call.
import { createCipheriv } from 'node:crypto';
import { TWEAK_UNIT } from './xts.js';

/**
 * Encrypts `data` with Node's aes-128-xts or aes-256-xts (by key length: 32 or 64 bytes), one
 * `sectorSize` data unit per cipher, tweaks counting 512-byte units from `first` (as dm-crypt).
 */
export function nodeXts(key: Uint8Array, data: Uint8Array, sectorSize: number, first: number): Buffer {
  const out = Buffer.alloc(data.length);
  for (let i = 0; i * sectorSize < data.length; i++) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt(first + (i * sectorSize) / TWEAK_UNIT));
    const c = createCipheriv(key.length === 32 ? 'aes-128-xts' : 'aes-256-xts', key, iv);
    out.set(c.update(data.subarray(i * sectorSize, (i + 1) * sectorSize)), i * sectorSize);
    c.final();
  }
  return out;
}
