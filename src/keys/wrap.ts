// Wrapping secrets under a customer or platform KEK: AES-256 key wrap with padding (crypto/key-wrap.ts) with KEK checks and WRONG_KEY errors, and the local-KEK provider base.
import { aesKeyUnwrapPad, aesKeyWrapPad } from '../crypto/key-wrap.js';
import { AtrestError } from '../errors/index.js';
import type { KekProvider, KekRef } from './kek.js';

/** KEK length this module accepts: AES-256 only. */
export const KEK_BYTES = 32;

function checkKek(kek: Uint8Array): void {
  if (kek.length !== KEK_BYTES) {
    throw new AtrestError(
      'USAGE',
      kek.length < KEK_BYTES ? 'KEK too short: need 32 bytes' : 'KEK too long: need 32 bytes',
      { hint: 'use a 256-bit key, e.g. head -c 32 /dev/urandom > FILE' },
    );
  }
}

/** Wraps `secret` (1 byte or more) under a 32-byte KEK; output is 8 bytes longer than the padded input. */
export function wrapKey(kek: Uint8Array, secret: Uint8Array): Buffer {
  checkKek(kek);
  if (secret.length === 0) throw new AtrestError('USAGE', 'cannot wrap an empty secret');
  return aesKeyWrapPad(kek, secret);
}

/** Unwraps; fails with WRONG_KEY when the integrity check does not hold (wrong KEK or damaged data). */
export function unwrapKey(kek: Uint8Array, wrapped: Uint8Array): Buffer {
  checkKek(kek);
  if (wrapped.length < 16 || wrapped.length % 8 !== 0) {
    throw new AtrestError('WRONG_KEY', 'wrapped key is malformed or does not match this KEK');
  }
  try {
    return aesKeyUnwrapPad(kek, wrapped);
  } catch (err) {
    throw new AtrestError('WRONG_KEY', 'wrapped key does not match this KEK', { cause: err });
  }
}

/**
 * A provider whose KEK bytes are loaded into this process (platform store, key files): wrap, unwrap
 * and availability in terms of one `load`, with the KEK wiped after every use.
 */
export abstract class LocalKekProvider implements KekProvider {
  abstract readonly scheme: string;
  readonly wrapAlg = 'aes256-kwp';
  abstract current(uri: string): Promise<KekRef>;
  /** The KEK bytes of that version (caller wipes); KEY_UNAVAILABLE when revoked or gone. */
  protected abstract load(ref: KekRef): Promise<Buffer>;

  async wrap(ref: KekRef, secret: Uint8Array): Promise<Buffer> {
    const kek = await this.load(ref);
    try {
      return wrapKey(kek, secret);
    } finally {
      kek.fill(0);
    }
  }

  async unwrap(ref: KekRef, wrapped: Uint8Array): Promise<Buffer> {
    const kek = await this.load(ref);
    try {
      return unwrapKey(kek, wrapped);
    } finally {
      kek.fill(0);
    }
  }

  async available(ref: KekRef): Promise<boolean> {
    try {
      (await this.load(ref)).fill(0);
      return true;
    } catch {
      return false;
    }
  }
}
