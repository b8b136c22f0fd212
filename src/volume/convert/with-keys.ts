// Starting or resuming an in-place conversion with keys given by the caller (ConversionKeyring): the daemon (online), `atrest encrypt`/`reencrypt` (offline).
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { AtrestError } from '../../errors/index.js';
import {
  AREA_BYTES,
  freeKeyslotArea,
  formatLuks2,
  markConverting,
  readLuks2,
  replaceVolumeKey,
  updateLuks2,
  resolvedDataSize,
  unlockVolumeKey,
  wipeAreas,
  type JsonObject,
  type ConvertPlan,
  type KdfChoice,
  type Luks2Metadata,
  type NewKeyslot,
} from '../../luks2/index.js';
import { findConversion } from './find.js';
import { unwrapOldKey, wrapOldKey } from './old-key.js';
import { DEFAULT_BATCH_BYTES, startEncrypt, type HeaderRequest } from './plan.js';
import { isPlaintextImage, looksEncrypted } from './plaintext-probe.js';

/** A volume key recovered by the key layer (with whatever else it tells about the unlock); the caller wipes it. */
export interface UnlockedKey {
  volumeKey: Buffer;
}

/**
 * One keyslot of a volume as the key layer sees it, for moving it to a new volume key: `bound` (a
 * secret wrapped under a platform or customer KEK by a token), `recovery` or `passphrase`.
 */
export type KeyslotToMove =
  | {
      slot: number;
      kind: 'bound';
      /** A keyslot for the new key bound the same way: a fresh secret (the caller wipes it) wrapped by the same KEK. */
      rebind(): Promise<NewKeyslot>;
    }
  | { slot: number; kind: 'recovery' | 'passphrase' };

/**
 * What a conversion needs of the key layer, and nothing more (volume/ does not import keys/):
 * keys/conversion-keyring.ts gives it for a KeyManager.
 */
export interface ConversionKeyring<U extends UnlockedKey = UnlockedKey> {
  /** Creates the new volume's header, its keyslot bound to `kek` (the platform key when undefined). */
  format(req: HeaderRequest, kek: string | undefined): Promise<void>;
  /** The volume key: from any keyslot with `passphrase`, else through the volume's binding tokens. */
  unlock(meta: Luks2Metadata, opts?: { passphrase: Buffer }): Promise<U>;
  /** Every keyslot of the volume, in keyslot order; throws CORRUPT_HEADER on a malformed token. */
  keyslots(meta: Luks2Metadata): KeyslotToMove[];
  /** A new recovery passphrase (to print once); the caller wipes it. */
  recoveryPassphrase(): Buffer;
  /** The token that marks a keyslot as a recovery keyslot. */
  recoveryToken(): JsonObject;
  /** Records in the audit log that the volume key of `volume` was replaced, and why. */
  rotated(volume: string, uuid: string, reason: string): void;
}

export interface ConversionKeys<U extends UnlockedKey = UnlockedKey> {
  keyring: ConversionKeyring<U>;
  /** Key file bytes: the new volume's keyslot passphrase (else the platform key, or `kek`). */
  passphrase?: Buffer;
  /** Customer KEK URI for the new volume's keyslot. */
  kek?: string;
  /** PBKDF2 target time for a passphrase keyslot (ms). */
  iterTimeMs?: number;
  /** More key files to try when unlocking (reencrypt: one per passphrase keyslot). */
  keyFiles?: Buffer[];
}

export interface OpenedConversion<U extends UnlockedKey = UnlockedKey> {
  header: string;
  plan: ConvertPlan;
  meta: Luks2Metadata;
  unlocked: U;
  started: boolean;
  /** reencrypt: the old volume key (the source); the caller wipes it. */
  oldKey: Buffer | null;
}

/**
 * Resumes the conversion of `image`, or (with `start`) starts encrypting a plaintext image in place,
 * and unlocks its new volume key. Returns null when the image is an ordinary LUKS2 volume. The caller
 * wipes `unlocked.volumeKey`.
 */
export async function openConversion<U extends UnlockedKey>(
  image: string,
  opts: {
    header?: string;
    sectorSize?: 512 | 1024 | 2048 | 4096;
    batch?: number;
    start: boolean;
    /** Refuse to start on an image whose every block looks random (open's automatic policy). */
    refuseRandom?: boolean;
    keys: ConversionKeys<U>;
  },
): Promise<OpenedConversion<U> | null> {
  let found = await findConversion(image, opts.header);
  let started = false;
  if (found === null) {
    if (!opts.start || !(await isPlaintextImage(image, opts.header))) return null;
    if (opts.refuseRandom === true && (await looksEncrypted(image))) {
      throw new AtrestError(
        'NOT_LUKS2',
        `${image} is not a LUKS2 image and looks like random data (a volume with a detached header?): not encrypting it automatically`,
        {
          path: image,
          hint: 'pass --header FILE if it has a detached header; to encrypt it anyway: atrest encrypt IMAGE',
        },
      );
    }
    const { keys } = opts;
    const makeHeader = async (req: HeaderRequest): Promise<void> => {
      if (keys.passphrase !== undefined) {
        if (keys.kek !== undefined)
          throw new AtrestError('USAGE', 'give either --key-file or --kek, not both');
        await formatLuks2({
          ...req,
          passphrase: keys.passphrase,
          ...(keys.iterTimeMs === undefined ? {} : { iterTimeMs: keys.iterTimeMs }),
        });
      } else {
        await keys.keyring.format(req, keys.kek);
      }
    };
    await startEncrypt(image, {
      sectorSize: opts.sectorSize ?? 4096,
      makeHeader,
      ...(opts.header === undefined ? {} : { header: opts.header }),
      ...(opts.batch === undefined ? {} : { batch: opts.batch }),
    });
    started = true;
    found = await findConversion(image, opts.header);
    if (found === null) throw new AtrestError('INTERNAL', `conversion of ${image} vanished after it started`);
  }
  const unlocked = await unlockAny(opts.keys, found.meta);
  let oldKey: Buffer | null = null;
  if (found.plan.mode === 'reencrypt') {
    if (found.plan.oldKey === undefined) {
      unlocked.volumeKey.fill(0);
      throw new AtrestError('CORRUPT_HEADER', `${found.header}: reencryption plan has no old key`);
    }
    oldKey = unwrapOldKey(unlocked.volumeKey, found.plan.oldKey);
  }
  return { header: found.header, plan: found.plan, meta: found.meta, unlocked, started, oldKey };
}

/** Unlocks with the passphrase, else through the tokens, else with any of the key files. */
async function unlockAny<U extends UnlockedKey>(keys: ConversionKeys<U>, meta: Luks2Metadata): Promise<U> {
  if (keys.passphrase !== undefined) return keys.keyring.unlock(meta, { passphrase: keys.passphrase });
  let firstErr: unknown = null;
  try {
    return await keys.keyring.unlock(meta);
  } catch (err) {
    firstErr = err;
  }
  for (const kf of keys.keyFiles ?? []) {
    const u = await keys.keyring.unlock(meta, { passphrase: kf }).catch(() => null);
    if (u !== null) return u;
  }
  throw firstErr instanceof Error ? firstErr : new AtrestError('WRONG_KEY', 'cannot unlock');
}

/**
 * Starts re-encrypting a LUKS2 volume under a new random volume key: unlocks the old key, makes a
 * keyslot of the new key for every keyslot of the old one by the same method (platform or customer
 * KEK: a fresh secret wrapped by the same KEK; passphrase and recovery: the passphrase given in a key
 * file; a recovery keyslot without one gets a new recovery passphrase, returned to print once), and
 * switches the header in one metadata update, with the old key kept (wrapped under the new one) in the
 * plan until the data is all rewritten. Refuses, leaving the image unchanged, when a passphrase keyslot
 * has no key file. The caller then resumes it like any conversion (openConversion).
 */
export async function startReencrypt(
  image: string,
  opts: {
    header?: string;
    keys: ConversionKeys & { keyFiles: Buffer[] };
    batch?: number;
    killPoint?: (name: string) => void;
  },
): Promise<{ recovery: Array<{ slot: number; passphrase: Buffer }> }> {
  const kill = opts.killPoint ?? ((): void => undefined);
  const { keyring } = opts.keys;
  const meta = await readLuks2(opts.header ?? image, { imagePath: image });
  if (meta.converting) {
    throw new AtrestError('REENCRYPT_IN_PROGRESS', `${image} is already being converted`, {
      hint: 'resume it with `atrest reencrypt IMAGE` (or open it)',
    });
  }
  const old = await unlockAny(opts.keys, meta);
  const oldKey = old.volumeKey;
  const newKey = newVolumeKey();
  const recovery: Array<{ slot: number; passphrase: Buffer }> = [];
  const secrets: Uint8Array[] = [];
  try {
    const slots: NewKeyslot[] = [];
    const missing: number[] = [];
    const pbkdf: KdfChoice = { type: 'pbkdf2', hash: 'sha256', iterTimeMs: opts.keys.iterTimeMs ?? 1000 };
    for (const e of keyring.keyslots(meta)) {
      if (!meta.digest.keyslots.includes(e.slot)) continue;
      if (e.kind === 'bound') {
        const nb = await e.rebind();
        secrets.push(nb.passphrase);
        slots.push(nb);
        continue;
      }
      let pass: Buffer | null = null;
      for (const kf of opts.keys.keyFiles) {
        const ok = await unlockVolumeKey(meta, kf, { keyslot: e.slot }).then(
          (u) => {
            u.volumeKey.fill(0);
            return true;
          },
          () => false,
        );
        if (ok) {
          pass = kf;
          break;
        }
      }
      const recoveryToken = keyring.recoveryToken();
      if (pass !== null) {
        slots.push({
          passphrase: pass,
          kdf: pbkdf,
          ...(e.kind === 'recovery' ? { token: recoveryToken } : {}),
        });
      } else if (e.kind === 'recovery') {
        const fresh = keyring.recoveryPassphrase();
        secrets.push(fresh);
        recovery.push({ slot: -1, passphrase: Buffer.from(fresh) });
        slots.push({ passphrase: fresh, kdf: pbkdf, token: recoveryToken });
      } else {
        missing.push(e.slot);
      }
    }
    if (missing.length > 0) {
      throw new AtrestError(
        'USAGE',
        `key slot${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${image} (passphrase) need${missing.length > 1 ? '' : 's'} ${missing.length > 1 ? 'their passphrases' : 'its passphrase'} to move to the new key`,
        { hint: 'pass each passphrase with --key-file FILE (repeatable), or remove those key slots first' },
      );
    }
    const areaOffset = freeKeyslotArea(meta, AREA_BYTES);
    if (areaOffset === null) {
      throw new AtrestError(
        'NO_SPACE',
        `${meta.headerPath}: no room in the keyslots area for the reencryption`,
        {
          hint: 'remove unused key slots first',
        },
      );
    }
    const plan: ConvertPlan = {
      mode: 'reencrypt',
      resilience: 'checksum',
      size: resolvedDataSize(meta, meta.imageSize),
      sectorSize: meta.sectorSize,
      sourceOffset: meta.dataOffset,
      targetOffset: meta.dataOffset,
      sourceIvTweak: meta.ivTweak,
      batch: opts.batch ?? DEFAULT_BATCH_BYTES,
      area: { offset: areaOffset, size: AREA_BYTES },
      sidecar: false,
      oldKey: wrapOldKey(newKey, oldKey),
      oldAreas: meta.keyslots.filter((k) => meta.digest.keyslots.includes(k.id)).map((k) => ({ ...k.area })),
    };
    // under the metadata lock, on the header the plan was made from (else another command changed it)
    const oldAreas = await updateLuks2(meta, async (fresh) => {
      if (fresh.seqid !== meta.seqid) {
        throw new AtrestError(
          'IMAGE_BUSY',
          `${meta.headerPath}: the LUKS2 header changed while the reencryption was prepared`,
          {
            path: meta.headerPath,
            hint: 'another command changed the key slots; try again',
          },
        );
      }
      // no stale records in the area (e.g. of the encryption that made this volume)
      const fh = await open(meta.headerPath, 'r+');
      try {
        await fh.write(Buffer.alloc(AREA_BYTES), 0, AREA_BYTES, areaOffset);
        await fh.sync();
      } finally {
        await fh.close();
      }
      kill('reencrypt-area-zeroed');
      return replaceVolumeKey(fresh, newKey, slots, {
        reserved: [plan.area],
        mutateJson: (json) => markConverting(json, plan),
      });
    });
    kill('reencrypt-switched');
    await wipeAreas(meta.headerPath, oldAreas);
    keyring.rotated(image, meta.uuid, 'reencrypt: new volume key');
    return { recovery };
  } finally {
    oldKey.fill(0);
    newKey.fill(0);
    for (const x of secrets) x.fill(0);
  }
}

function newVolumeKey(): Buffer {
  for (;;) {
    const key = randomBytes(64);
    if (!key.subarray(0, 32).equals(key.subarray(32))) return key;
    key.fill(0);
  }
}
