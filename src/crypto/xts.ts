// AES-256-XTS over runs of sectors (dm-crypt aes-xts-plain64), batched through Node's crypto.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { AtrestError } from '../errors/index.js';

/** XTS tweaks always count 512-byte units (LUKS2 never sets iv_large_sectors). */
export const TWEAK_UNIT = 512;

/** Refuses anything but a 64-byte key whose two halves differ (FIPS 140 / IEEE 1619 requirement). */
export function assertXtsKey(key: Uint8Array): void {
  if (key.length !== 64) {
    throw new AtrestError('UNSUPPORTED', `AES-256-XTS needs a 512-bit key, got ${key.length * 8} bits`);
  }
  if (Buffer.from(key.buffer, key.byteOffset, 32).equals(Buffer.from(key.buffer, key.byteOffset + 32, 32))) {
    throw new AtrestError('WEAK_KEY', 'the two halves of the XTS key are equal, which XTS forbids', {
      hint: 'make a new volume key',
    });
  }
}

function checkRun(data: Uint8Array, sectorSize: number): void {
  if (![512, 1024, 2048, 4096].includes(sectorSize)) {
    throw new AtrestError('UNSUPPORTED', `sector size ${sectorSize} is not one of 512, 1024, 2048, 4096`);
  }
  if (data.length % sectorSize !== 0) {
    throw new AtrestError(
      'INTERNAL',
      `XTS run of ${data.length} bytes is not whole ${sectorSize}-byte sectors`,
    );
  }
}

/**
 * Encrypts `data` in place: whole sectors of `sectorSize` bytes; the first sector's tweak is
 * `firstTweak` (in 512-byte units), the next ones step by sectorSize/512.
 */
export function xtsEncryptInPlace(
  key: Uint8Array,
  data: Uint8Array,
  sectorSize: number,
  firstTweak: number,
): void {
  xtsRun(key, data, sectorSize, firstTweak, true);
}

/** Decrypts `data` in place; see xtsEncryptInPlace. */
export function xtsDecryptInPlace(
  key: Uint8Array,
  data: Uint8Array,
  sectorSize: number,
  firstTweak: number,
): void {
  xtsRun(key, data, sectorSize, firstTweak, false);
}

function xtsRun(
  key: Uint8Array,
  data: Uint8Array,
  sectorSize: number,
  firstTweak: number,
  encrypt: boolean,
): void {
  checkRun(data, sectorSize);
  assertXtsKey(key);
  const step = sectorSize / TWEAK_UNIT;
  const iv = Buffer.alloc(16);
  for (let off = 0, t = firstTweak; off < data.length; off += sectorSize, t += step) {
    iv.writeUInt32LE(t >>> 0, 0);
    iv.writeUInt32LE(Math.floor(t / 0x1_0000_0000), 4);
    const c = encrypt ? createCipheriv('aes-256-xts', key, iv) : createDecipheriv('aes-256-xts', key, iv);
    const out = c.update(data.subarray(off, off + sectorSize));
    c.final();
    data.set(out, off);
  }
}
