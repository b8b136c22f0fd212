// A reencryption's old volume key kept in its plan: wrapped (AES-256 KWP, crypto/key-wrap.ts) under a key derived (HKDF-SHA256) from the new one, and unwrapped to resume.
import { hkdfSync } from 'node:crypto';
import { aesKeyUnwrapPad, aesKeyWrapPad } from '../../crypto/key-wrap.js';
import { AtrestError } from '../../errors/index.js';

function oldKeyKek(newKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', newKey, Buffer.alloc(0), 'atrest-reencrypt-old-key', 32));
}

/**
 * The old volume key of a reencryption, wrapped (AES-256 KWP) under a key derived from the new one: it
 * stays recoverable for resuming after a crash exactly as long as the plan exists, and never longer.
 */
export function wrapOldKey(newKey: Uint8Array, oldKey: Uint8Array): string {
  const kek = oldKeyKek(newKey);
  try {
    return aesKeyWrapPad(kek, oldKey).toString('base64');
  } finally {
    kek.fill(0);
  }
}

export function unwrapOldKey(newKey: Uint8Array, wrapped: string): Buffer {
  const kek = oldKeyKek(newKey);
  try {
    return aesKeyUnwrapPad(kek, Buffer.from(wrapped, 'base64'));
  } catch (err) {
    throw new AtrestError('CORRUPT_HEADER', 'the old key of the reencryption does not unwrap', {
      cause: err,
    });
  } finally {
    kek.fill(0);
  }
}
