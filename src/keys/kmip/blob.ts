// The KMIP provider's wrapped-secret blob: "KMP1" | format 0x01 | ivLen (1) | iv | the server's Encrypt output (ciphertext || GCM tag).
import { AtrestError } from '../../errors/index.js';

const MAGIC = Buffer.from('KMP1', 'latin1');
const FORMAT = 1;

/** Packs the server's ciphertext and IV into the blob a token stores. */
export function packBlob(iv: Uint8Array, data: Uint8Array): Buffer {
  if (iv.length > 255) throw new AtrestError('INTERNAL', `KMIP IV of ${iv.length} bytes`);
  return Buffer.concat([MAGIC, Buffer.from([FORMAT, iv.length]), iv, data]);
}

/** Splits a stored blob; a malformed one is WRONG_KEY (it cannot unwrap anything). */
export function unpackBlob(blob: Uint8Array): { iv: Buffer; data: Buffer } {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  const ivLen = b[5];
  if (b.length < 6 || !b.subarray(0, 4).equals(MAGIC) || b[4] !== FORMAT || ivLen === undefined)
    throw new AtrestError('WRONG_KEY', 'wrapped key is not a KMIP-wrapped key (bad blob)');
  if (b.length < 6 + ivLen + 1) throw new AtrestError('WRONG_KEY', 'wrapped key is truncated (KMIP blob)');
  return { iv: Buffer.from(b.subarray(6, 6 + ivLen)), data: Buffer.from(b.subarray(6 + ivLen)) };
}
