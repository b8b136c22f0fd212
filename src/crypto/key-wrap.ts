// AES-256 key wrap with padding (RFC 5649), the one copy: OpenSSL's id-aes256-wrap-pad over Buffers, for KEK wrapping (keys/) and a reencryption's old key (volume/).
import { createCipheriv, createDecipheriv } from 'node:crypto';

/** RFC 5649 alternative initial value (the 32-bit constant; OpenSSL appends the length). */
const AIV = Buffer.from('A65959A6', 'hex');

/**
 * Wraps `secret` (1 byte or more) under a 32-byte `kek`; the result is 8 bytes longer than `secret`
 * padded to a multiple of 8. Callers check the lengths and map errors to their own codes.
 */
export function aesKeyWrapPad(kek: Uint8Array, secret: Uint8Array): Buffer {
  const c = createCipheriv('id-aes256-wrap-pad', kek, AIV);
  return Buffer.concat([c.update(secret), c.final()]);
}

/**
 * Unwraps; throws OpenSSL's error when the integrity check fails (wrong KEK or damaged input). The
 * intermediate buffers holding key bytes are wiped; the caller wipes the result.
 */
export function aesKeyUnwrapPad(kek: Uint8Array, wrapped: Uint8Array): Buffer {
  const parts: Buffer[] = [];
  try {
    const d = createDecipheriv('id-aes256-wrap-pad', kek, AIV);
    parts.push(d.update(wrapped));
    parts.push(d.final());
    return Buffer.concat(parts);
  } finally {
    for (const p of parts) p.fill(0);
  }
}
