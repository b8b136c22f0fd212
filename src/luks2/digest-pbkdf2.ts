// Digest handlers by LUKS2 type name: 'pbkdf2' checks a candidate volume key (cryptsetup luks2_digest_pbkdf2.c).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { pbkdf2Any } from '../crypto/kdf.js';
import { kdfLimitViolation } from '../crypto/kdf-limits.js';
import { KDF_SALT_LEN, pbkdf2HashSupported } from './kdf-table.js';
import { getBase64, getInt, getString, InvalidMetadata, type JsonObject } from './metadata.js';

export interface DigestHandler {
  /** Returns a reason string if this digest cannot be checked here. */
  check(digest: JsonObject): string | null;
  verify(digest: JsonObject, volumeKey: Uint8Array): Promise<boolean>;
  /** A new digest object for `volumeKey` (keyslots and segments arrays left empty). */
  create(volumeKey: Uint8Array, iterations: number, hash: string): Promise<JsonObject>;
}

const LEGACY_DIGEST_LEN = 20;

const pbkdf2Digest: DigestHandler = {
  check(d) {
    const hash = getString(d, 'hash', 'digest');
    const iterations = getInt(d, 'iterations', 'digest', 1);
    if (getBase64(d, 'salt', 'digest').length !== KDF_SALT_LEN) {
      throw new InvalidMetadata('digest salt is not 32 bytes');
    }
    if (!pbkdf2HashSupported(hash)) return `digest hash ${hash} is not available in this Node.js`;
    const tooMany = kdfLimitViolation({ type: 'pbkdf2', iterations });
    if (tooMany !== null) return `digest: ${tooMany}`;
    const len = getBase64(d, 'digest', 'digest').length;
    const hashLen = createHash(hash).digest().length;
    if (len !== LEGACY_DIGEST_LEN && len !== hashLen) {
      throw new InvalidMetadata(`digest is ${len} bytes, not ${hashLen}`);
    }
    return null;
  },
  async verify(d, volumeKey) {
    const expected = getBase64(d, 'digest', 'digest');
    const got = await pbkdf2Any(
      volumeKey,
      getBase64(d, 'salt', 'digest'),
      getInt(d, 'iterations', 'digest', 1),
      expected.length,
      getString(d, 'hash', 'digest'),
    );
    try {
      return got.length === expected.length && timingSafeEqual(got, expected);
    } finally {
      got.fill(0);
    }
  },
  async create(volumeKey, iterations, hash) {
    const salt = randomBytes(KDF_SALT_LEN);
    const len = createHash(hash).digest().length;
    const digest = await pbkdf2Any(volumeKey, salt, iterations, len, hash);
    const out: JsonObject = {
      type: 'pbkdf2',
      keyslots: [],
      segments: [],
      hash,
      iterations,
      salt: salt.toString('base64'),
      digest: digest.toString('base64'),
    };
    digest.fill(0);
    return out;
  },
};

/** The digest types a LUKS2 header may use. */
export const DIGEST_HANDLERS: Readonly<Record<string, DigestHandler>> = { pbkdf2: pbkdf2Digest };

export function digestHandler(type: string): DigestHandler | undefined {
  return Object.prototype.hasOwnProperty.call(DIGEST_HANDLERS, type) ? DIGEST_HANDLERS[type] : undefined;
}
