// Unlock policy: which keyslots may open a volume and in what order (FIPS: PBKDF2 only), and which failure is reported.
import { AtrestError, isAtrestError } from '../errors/index.js';
import { keyslotUnusableReason, unlockVolumeKey, type Luks2Metadata } from '../luks2/index.js';
import { bindings, type KekBinding } from './tokens.js';

/** In FIPS mode, refuses a keyslot whose KDF is not PBKDF2 (Argon2 is not FIPS-approved). */
export function checkFipsKeyslot(meta: Luks2Metadata, keyslot: number, fips: boolean): void {
  if (!fips) return;
  const k = meta.keyslots.find((x) => x.id === keyslot);
  if (k !== undefined && k.kdf !== 'pbkdf2') {
    throw new AtrestError(
      'UNSUPPORTED',
      `${meta.headerPath}: key slot ${keyslot} uses ${k.kdf}, not allowed in FIPS mode`,
      {
        path: meta.headerPath,
        hint: 'use a PBKDF2 key slot (atrest key add-recovery, or cryptsetup luksAddKey --pbkdf pbkdf2)',
      },
    );
  }
}

/**
 * The volume key from a passphrase: from `keyslot`, or from any keyslot as cryptsetup tries them; in
 * FIPS mode only usable PBKDF2 keyslots, by priority then number. Caller wipes volumeKey.
 */
export async function unlockWithPassphrase(
  meta: Luks2Metadata,
  passphrase: Uint8Array,
  keyslot: number | undefined,
  fips: boolean,
): Promise<{ volumeKey: Buffer; keyslot: number }> {
  if (!fips) return unlockVolumeKey(meta, passphrase, keyslot === undefined ? {} : { keyslot });
  if (keyslot !== undefined) {
    checkFipsKeyslot(meta, keyslot, fips);
    return unlockVolumeKey(meta, passphrase, { keyslot });
  }
  const slots = meta.keyslots
    .filter((k) => k.kdf === 'pbkdf2' && k.priority > 0 && keyslotUnusableReason(meta, k.id) === null)
    .sort((a, b) => b.priority - a.priority || a.id - b.id);
  for (const k of slots) {
    try {
      return await unlockVolumeKey(meta, passphrase, { keyslot: k.id });
    } catch (err) {
      if (!(isAtrestError(err) && err.code === 'WRONG_KEY')) throw err;
    }
  }
  throw new AtrestError('WRONG_KEY', `${meta.headerPath}: no PBKDF2 key slot matches this key (FIPS mode)`, {
    path: meta.headerPath,
    hint: 'in FIPS mode only PBKDF2 key slots are used',
  });
}

/** The volume key from a binding's secret; a mismatch is a token that does not match its keyslot. */
export async function unlockBoundKeyslot(
  meta: Luks2Metadata,
  b: KekBinding,
  secret: Buffer,
  fips: boolean,
): Promise<Buffer> {
  checkFipsKeyslot(meta, b.keyslot, fips);
  try {
    return (await unlockVolumeKey(meta, secret, { keyslot: b.keyslot })).volumeKey;
  } catch (err) {
    if (isAtrestError(err) && err.code === 'WRONG_KEY') {
      throw new AtrestError(
        'WRONG_KEY',
        `${meta.headerPath}: token ${b.tokenId} (${b.type}) does not match its key slot ${b.keyslot}`,
        {
          path: meta.headerPath,
          hint: 'the token was altered or belongs to another volume; unlock with a recovery key',
        },
      );
    }
    throw err;
  }
}

/** The bindings to try, in token order (only the one of `keyslot` when given); may be empty. */
export function bindingsToTry(meta: Luks2Metadata, keyslot: number | undefined): KekBinding[] {
  const list = bindings(meta);
  return keyslot === undefined ? list : list.filter((b) => b.keyslot === keyslot);
}

/** The error when no binding token can be tried. */
export function noBindingError(meta: Luks2Metadata, keyslot: number | undefined): AtrestError {
  return new AtrestError(
    'WRONG_KEY',
    `${meta.headerPath} is not bound to a platform or customer key${keyslot === undefined ? '' : ` in key slot ${keyslot}`}`,
    { path: meta.headerPath, hint: 'unlock it with --key-file FILE (a passphrase or recovery key)' },
  );
}

/**
 * Which of the bindings' failures to report: KEY_UNAVAILABLE says the most (a revoked key); keep the
 * first of those, else the first error.
 */
export function preferredError(first: unknown, err: unknown): unknown {
  if (first === null || (isUnavailable(err) && !isUnavailable(first))) return err;
  return first;
}

/** The AtrestError code of a failure, for the audit log (INTERNAL for anything else). */
export function codeOf(err: unknown): string {
  return isAtrestError(err) ? err.code : 'INTERNAL';
}

function isUnavailable(err: unknown): boolean {
  return isAtrestError(err) && err.code === 'KEY_UNAVAILABLE';
}
