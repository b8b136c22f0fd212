// Keyslot KDFs by LUKS2 type name: pbkdf2 (any hash Node has), argon2i and argon2id; each validates its JSON and derives a key.
import { Buffer } from 'node:buffer';
import { pbkdf2Sync } from 'node:crypto';
import { argon2, pbkdf2Any } from '../crypto/kdf.js';
import { kdfLimitViolation } from '../crypto/kdf-limits.js';
import { getBase64, getInt, getString, InvalidMetadata, type JsonObject } from './metadata.js';

/** Keyslot and digest salts are 32 bytes in LUKS2. */
export const KDF_SALT_LEN = 32;

export interface KdfHandler {
  /** Throws InvalidMetadata if the kdf object lacks a field; returns a reason string if unsupported. */
  check(kdf: JsonObject): string | null;
  derive(kdf: JsonObject, passphrase: Uint8Array, keyLength: number): Promise<Buffer>;
}

const pbkdf2Hashes = new Map<string, boolean>();

/** Whether PBKDF2 can use `hash` here (not every hash Node knows can: shake256 cannot). */
export function pbkdf2HashSupported(hash: string): boolean {
  let ok = pbkdf2Hashes.get(hash);
  if (ok === undefined) {
    try {
      pbkdf2Sync(Buffer.alloc(1), Buffer.alloc(1), 1, 1, hash);
      ok = true;
    } catch {
      ok = false;
    }
    if (pbkdf2Hashes.size < 64) pbkdf2Hashes.set(hash, ok);
  }
  return ok;
}

function salt(kdf: JsonObject): Buffer {
  const s = getBase64(kdf, 'salt', 'kdf');
  if (s.length !== KDF_SALT_LEN) throw new InvalidMetadata(`kdf salt is ${s.length} bytes, not 32`);
  return s;
}

const pbkdf2Handler: KdfHandler = {
  check(kdf) {
    const hash = getString(kdf, 'hash', 'kdf');
    const iterations = getInt(kdf, 'iterations', 'kdf', 1);
    salt(kdf);
    if (!pbkdf2HashSupported(hash)) return `PBKDF2 hash ${hash} is not available in this Node.js`;
    return kdfLimitViolation({ type: 'pbkdf2', iterations });
  },
  derive(kdf, passphrase, keyLength) {
    return pbkdf2Any(
      passphrase,
      salt(kdf),
      getInt(kdf, 'iterations', 'kdf', 1),
      keyLength,
      getString(kdf, 'hash', 'kdf'),
    );
  },
};

function argon2Handler(type: 'argon2i' | 'argon2id'): KdfHandler {
  return {
    check(kdf) {
      const time = getInt(kdf, 'time', 'kdf', 1);
      const memory = getInt(kdf, 'memory', 'kdf', 1);
      const cpus = getInt(kdf, 'cpus', 'kdf', 1);
      salt(kdf);
      return kdfLimitViolation({ type, time, memory, cpus });
    },
    derive(kdf, passphrase, keyLength) {
      return argon2(type, passphrase, salt(kdf), {
        timeCost: getInt(kdf, 'time', 'kdf', 1),
        memoryKiB: getInt(kdf, 'memory', 'kdf', 1),
        parallelism: getInt(kdf, 'cpus', 'kdf', 1),
        keyLength,
      });
    },
  };
}

/** The KDFs a keyslot may name. */
export const KDF_HANDLERS: Readonly<Record<string, KdfHandler>> = {
  pbkdf2: pbkdf2Handler,
  argon2i: argon2Handler('argon2i'),
  argon2id: argon2Handler('argon2id'),
};

export function kdfHandler(type: string): KdfHandler | undefined {
  return Object.prototype.hasOwnProperty.call(KDF_HANDLERS, type) ? KDF_HANDLERS[type] : undefined;
}
