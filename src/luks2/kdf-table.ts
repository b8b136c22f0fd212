// Keyslot KDFs by LUKS2 type name: pbkdf2 (any hash Node has), argon2i and argon2id; each validates its JSON and derives a key.
import { Buffer } from 'node:buffer';
import { pbkdf2 as nodePbkdf2, pbkdf2Sync } from 'node:crypto';
import { argon2, pbkdf2, type Pbkdf2Hash } from '../crypto/kdf.js';
import { getBase64, getInt, getString, InvalidMetadata, type JsonObject } from './metadata.js';

/** Keyslot and digest salts are 32 bytes in LUKS2. */
export const KDF_SALT_LEN = 32;

export interface KdfHandler {
  /** Throws InvalidMetadata if the kdf object lacks a field; returns a reason string if unsupported. */
  check(kdf: JsonObject): string | null;
  derive(kdf: JsonObject, passphrase: Uint8Array, keyLength: number): Promise<Buffer>;
}

const FAST_HASHES: readonly string[] = ['sha1', 'sha256', 'sha512'];

/** The most PBKDF2 iterations Node's pbkdf2 computes (cryptsetup writes up to 2^32 - 1). */
export const PBKDF2_MAX_ITERATIONS_HERE = 0x7fff_ffff;

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

/** Why PBKDF2 with these iterations cannot run here, or null. */
export function pbkdf2IterationsUnsupported(iterations: number): string | null {
  return iterations > PBKDF2_MAX_ITERATIONS_HERE
    ? `PBKDF2 iterations ${iterations} exceed ${PBKDF2_MAX_ITERATIONS_HERE}, the most atrest can compute`
    : null;
}

/** PBKDF2 with any hash Node has (the crypto layer's pbkdf2 for sha1/sha256/sha512). */
export async function pbkdf2AnyHash(
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  keyLength: number,
  hash: string,
): Promise<Buffer> {
  if (FAST_HASHES.includes(hash)) return pbkdf2(password, salt, iterations, keyLength, hash as Pbkdf2Hash);
  return new Promise<Buffer>((resolve, reject) => {
    nodePbkdf2(password, salt, iterations, keyLength, hash, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
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
    return pbkdf2IterationsUnsupported(iterations);
  },
  derive(kdf, passphrase, keyLength) {
    return pbkdf2AnyHash(
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
      getInt(kdf, 'time', 'kdf', 1);
      getInt(kdf, 'memory', 'kdf', 1);
      getInt(kdf, 'cpus', 'kdf', 1);
      salt(kdf);
      return null;
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
