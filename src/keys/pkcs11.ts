// The PKCS#11 KEK provider (an HSM, or SoftHSM2 in tests): current/wrap/unwrap/available over kept sessions.
//
// The KEK never leaves the token: wrap and unwrap are CKM_AES_GCM C_Encrypt/C_Decrypt calls inside it.
//
// Mechanism: AES-256-GCM with a random 12-byte IV generated here and stored in the blob (pkcs11-gcm.ts).
// Chosen over CKM_AES_KEY_WRAP_PAD because the latter needs the secret imported as an extractable session
// key object and, on unwrap, a non-sensitive extractable object whose CKA_VALUE we read back; GCM gives
// authenticated encryption of the 32 bytes directly and SoftHSM2 2.6 supports it.
//
// Versions: object label `NAME` is version 1, `NAME.v2`, `NAME.v3`, ... are later versions (all
// CKO_SECRET_KEY / CKK_AES). `current()` picks the highest version present (pkcs11-keys.ts).
//
// Revocation: a key is unavailable when its object is gone or its CKA_DECRYPT or CKA_UNWRAP is false.
//
// Sessions (module load, token slot, login) are kept per module and token (pkcs11-session.ts); a call that
// finds its session stale (token removed or re-initialised) reconnects once.
import { AtrestError } from '../errors/index.js';
import type { KekProvider, KekRef } from './kek.js';
import { openSecret, parseBlob, sealSecret } from './pkcs11-gcm.js';
import { findKey, newestKek } from './pkcs11-keys.js';
import { Pkcs11Sessions } from './pkcs11-session.js';

/** Options for tests and embedding. */
export interface Pkcs11ProviderOptions {
  /** Used when the URI has no module-path. */
  defaultModulePath?: string;
}

export class Pkcs11Provider implements KekProvider {
  readonly scheme = 'pkcs11';
  readonly wrapAlg = 'pkcs11-aes256-gcm';
  private readonly sessions: Pkcs11Sessions;

  constructor(options: Pkcs11ProviderOptions = {}) {
    this.sessions = new Pkcs11Sessions(options.defaultModulePath);
  }

  current(uri: string): Promise<KekRef> {
    return settle(() => this.sessions.reconnecting(uri, () => newestKek(this.sessions, uri)));
  }

  wrap(ref: KekRef, secret: Uint8Array): Promise<Buffer> {
    return settle(() =>
      this.sessions.reconnecting(ref.uri, () => sealSecret(findKey(this.sessions, ref), ref, secret)),
    );
  }

  unwrap(ref: KekRef, wrapped: Uint8Array): Promise<Buffer> {
    return settle(() =>
      this.sessions.reconnecting(ref.uri, () => {
        const blob = parseBlob(wrapped);
        return openSecret(findKey(this.sessions, ref), ref, blob);
      }),
    );
  }

  available(ref: KekRef): Promise<boolean> {
    return settle(() => this.sessions.reconnecting(ref.uri, () => this.availableSync(ref)));
  }

  private availableSync(ref: KekRef): boolean {
    try {
      findKey(this.sessions, ref);
      return true;
    } catch (err) {
      if (err instanceof AtrestError && err.code === 'KEY_UNAVAILABLE') return false;
      throw err;
    }
  }

  /** Closes every session and finalizes every loaded module. */
  close(): void {
    this.sessions.close();
  }
}

/** Runs a synchronous PKCS#11 call sequence, turning a throw into a rejection. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}
