// Keyslots as atrest sees them: listing (kind, KEK, usable), bound keyslot parameters, recovery keyslots, removal checks.
import { randomInt } from 'node:crypto';
import { AtrestError } from '../errors/index.js';
import {
  addKeyslot,
  keyslotUnusableReason,
  resolveKdf,
  updateLuks2,
  type KdfChoice,
  type Luks2Metadata,
  type TokenInfo,
} from '../luks2/index.js';
import { redactUri } from './kek.js';
import { BINDING_TYPES, keySourceOf, parseBinding, recoveryTokenJson, TOKEN_RECOVERY } from './tokens.js';

/** Bytes of a bound keyslot's random passphrase (the secret its token wraps). */
export const SECRET_BYTES = 32;
/**
 * KDF of bound keyslots. Their passphrase is 256 random bits, so key stretching adds nothing; this is
 * cryptsetup's minimum (what systemd-cryptenroll uses for TPM2/FIDO2 tokens too). PBKDF2: FIPS-approved.
 */
export const BOUND_KEYSLOT_KDF: KdfChoice = { type: 'pbkdf2', hash: 'sha256', iterations: 1000 };

export type KeyslotKind = 'platform' | 'customer' | 'recovery' | 'passphrase';

export interface KeyslotEntry {
  slot: number;
  kind: KeyslotKind;
  token: number | null;
  kdf: string;
  priority: number;
  /** KEK URI, secrets redacted (bound keyslots). */
  kek?: string;
  keyId?: string;
  kekVersion?: number;
  /** Whether this keyslot can unlock the data segment here (digest linked, supported type/KDF). */
  usable: boolean;
}

/** Lists keyslots with their kind, token and KEK (URI redacted). */
export function listKeyslots(meta: Luks2Metadata): KeyslotEntry[] {
  const byKeyslot = new Map<number, TokenInfo>();
  for (const t of meta.tokens) for (const k of t.keyslots) if (!byKeyslot.has(k)) byKeyslot.set(k, t);
  return meta.keyslots.map((k): KeyslotEntry => {
    const t = byKeyslot.get(k.id);
    const entry: KeyslotEntry = {
      slot: k.id,
      kind: 'passphrase',
      token: t?.id ?? null,
      kdf: k.kdf,
      priority: k.priority,
      usable: keyslotUnusableReason(meta, k.id) === null,
    };
    if (t && BINDING_TYPES.includes(t.type)) {
      const b = parseBinding(meta, t);
      entry.kind = keySourceOf(b);
      entry.kek = redactUri(b.kek);
      entry.keyId = b.keyId;
      entry.kekVersion = b.version;
    } else if (t?.type === TOKEN_RECOVERY) {
      entry.kind = 'recovery';
    }
    return entry;
  });
}

/** A recovery passphrase: 8 groups of 5 characters from a 32-symbol alphabet, 200 bits. */
export function generateRecoveryPassphrase(): Buffer {
  const alphabet = Buffer.from('0123456789abcdefghjkmnpqrstvwxyz', 'latin1');
  const out = Buffer.alloc(8 * 5 + 7);
  let o = 0;
  for (let g = 0; g < 8; g++) {
    if (g > 0) out[o++] = 0x2d; // '-'
    for (let i = 0; i < 5; i++) out[o++] = alphabet[randomInt(32)] ?? 0x30;
  }
  return out;
}

/**
 * Adds a recovery keyslot for `passphrase` (KDF default: PBKDF2 benchmarked to 2 s), marked by a
 * recovery token. Benchmarks first, then picks the key slot and area on the header as it is under the
 * metadata lock. Returns the keyslot.
 */
export async function addRecoveryKeyslot(
  meta: Luks2Metadata,
  volumeKey: Buffer,
  passphrase: Buffer,
  kdf?: KdfChoice,
): Promise<number> {
  const choice = await resolveKdf(
    kdf ?? { type: 'pbkdf2', hash: 'sha256', iterTimeMs: 2000 },
    volumeKey.length,
  );
  return updateLuks2(meta, (fresh) =>
    addKeyslot(fresh, volumeKey, passphrase, { kdf: choice, token: recoveryTokenJson(new Date()) }),
  );
}

/**
 * The entry of a keyslot that may be removed; refuses one that does not exist, and the last keyslot
 * that can unlock the volume.
 */
export function removableKeyslot(meta: Luks2Metadata, slot: number): KeyslotEntry {
  const entries = listKeyslots(meta);
  const target = entries.find((e) => e.slot === slot);
  if (!target) {
    throw new AtrestError('USAGE', `${meta.headerPath}: there is no key slot ${slot}`, {
      path: meta.headerPath,
      hint: 'see atrest key list IMAGE',
    });
  }
  if (!entries.some((e) => e.slot !== slot && e.usable)) {
    throw new AtrestError(
      'USAGE',
      `${meta.headerPath}: key slot ${slot} is the last one that can unlock the volume; removing it loses the data`,
      { path: meta.headerPath, hint: 'add another first (atrest key add-recovery IMAGE)' },
    );
  }
  return target;
}
