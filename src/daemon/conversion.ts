// Starting or resuming an in-place conversion with keys: shared by the daemon (online) and `atrest encrypt` (offline).
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { AtrestError, isAtrestError } from '../errors/index.js';
import {
  bindings,
  BOUND_KEYSLOT_KDF,
  generateRecoveryPassphrase,
  listKeyslots,
  TOKEN_RECOVERY,
  type KeyManager,
  type Unlocked,
} from '../keys/index.js';
import {
  AREA_BYTES,
  findAreaGap,
  formatLuks2,
  luksRemnants,
  markConverting,
  readLuks2,
  replaceVolumeKey,
  updateLuks2,
  resolvedDataSize,
  unlockVolumeKey,
  wipeAreas,
  type ConvertPlan,
  type KdfChoice,
  type Luks2Metadata,
  type NewKeyslot,
} from '../luks2/index.js';
import {
  DEFAULT_BATCH_BYTES,
  findConversion,
  startEncrypt,
  unwrapOldKey,
  wrapOldKey,
  type HeaderRequest,
} from '../volume/index.js';

export interface ConversionKeys {
  km: KeyManager;
  /** Key file bytes: the new volume's keyslot passphrase (else the platform key, or `kek`). */
  passphrase?: Buffer;
  /** Customer KEK URI for the new volume's keyslot. */
  kek?: string;
  /** PBKDF2 target time for a passphrase keyslot (ms). */
  iterTimeMs?: number;
  /** More key files to try when unlocking (reencrypt: one per passphrase keyslot). */
  keyFiles?: Buffer[];
}

export interface OpenedConversion {
  header: string;
  plan: ConvertPlan;
  meta: Luks2Metadata;
  unlocked: Unlocked;
  started: boolean;
  /** reencrypt: the old volume key (the source); the caller wipes it. */
  oldKey: Buffer | null;
}

/**
 * Whether the image looks like ciphertext: every sampled 4 KiB block (up to 64, spread over the
 * first 256 MiB) has a byte histogram as flat as random data. Real plaintext images (file systems,
 * VM disks) have structured or zero blocks; an image whose every block looks random is more likely
 * a volume with a detached header that was opened without it.
 */
export async function looksEncrypted(image: string): Promise<boolean> {
  const fh = await open(image, 'r');
  try {
    const size = (await fh.stat()).size;
    const blocks = Math.floor(Math.min(size, 256 * 1024 * 1024) / 4096);
    if (blocks === 0) return false;
    const n = Math.min(64, blocks);
    const buf = Buffer.alloc(4096);
    for (let i = 0; i < n; i++) {
      const at = Math.floor((i * blocks) / n) * 4096;
      await fh.read(buf, 0, 4096, at);
      const hist = new Uint32Array(256);
      for (const b of buf) hist[b] = (hist[b] ?? 0) + 1;
      let chi = 0;
      for (const c of hist) chi += (c - 16) ** 2 / 16;
      if (chi > 400) return false; // random data: about 255 +- 23
    }
    return true;
  } finally {
    await fh.close();
  }
}

/** Whether `image` (with `header`) is plaintext: no LUKS header where one would be. */
export async function isPlaintextImage(image: string, header: string | undefined): Promise<boolean> {
  try {
    await readLuks2(header ?? image, { imagePath: image });
    return false;
  } catch (err) {
    if (isAtrestError(err) && err.code === 'NOT_LUKS2') {
      if (header !== undefined) return false;
      // a LUKS volume whose headers are damaged must never be taken for plaintext and encrypted again
      const why = await luksRemnants(image);
      if (why !== null) {
        throw new AtrestError('CORRUPT_HEADER', `${image} ${why} but no valid LUKS2 header`, {
          path: image,
          hint: 'restore the header from a backup (cryptsetup luksHeaderRestore); atrest will not encrypt it again',
        });
      }
      return true;
    }
    if (isAtrestError(err) && err.code === 'FILE_NOT_FOUND' && header !== undefined) return true;
    throw err;
  }
}

/**
 * Resumes the conversion of `image`, or (with `start`) starts encrypting a plaintext image in place,
 * and unlocks its new volume key. Returns null when the image is an ordinary LUKS2 volume. The caller
 * wipes `unlocked.volumeKey`.
 */
export async function openConversion(
  image: string,
  opts: {
    header?: string;
    sectorSize?: 512 | 1024 | 2048 | 4096;
    batch?: number;
    start: boolean;
    /** Refuse to start on an image whose every block looks random (open's automatic policy). */
    refuseRandom?: boolean;
    keys: ConversionKeys;
  },
): Promise<OpenedConversion | null> {
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
        await keys.km.format(req, keys.kek);
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
async function unlockAny(keys: ConversionKeys, meta: Luks2Metadata): Promise<Unlocked> {
  if (keys.passphrase !== undefined) return keys.km.unlock(meta, { passphrase: keys.passphrase });
  let firstErr: unknown = null;
  try {
    return await keys.km.unlock(meta);
  } catch (err) {
    firstErr = err;
  }
  for (const kf of keys.keyFiles ?? []) {
    const u = await keys.km.unlock(meta, { passphrase: kf }).catch(() => null);
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
  const { km } = opts.keys;
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
  const secrets: Buffer[] = [];
  try {
    const slots: NewKeyslot[] = [];
    const missing: number[] = [];
    const pbkdf: KdfChoice = { type: 'pbkdf2', hash: 'sha256', iterTimeMs: opts.keys.iterTimeMs ?? 1000 };
    const bound = new Map(bindings(meta).map((b) => [b.keyslot, b]));
    for (const e of listKeyslots(meta)) {
      if (!meta.digest.keyslots.includes(e.slot)) continue;
      const b = bound.get(e.slot);
      if (b !== undefined) {
        const nb = await km.newBinding(km.effectiveUri(b.kek));
        secrets.push(nb.secret);
        nb.token.atrest_kek = b.kek; // keep the stored URI exactly
        slots.push({ passphrase: nb.secret, kdf: BOUND_KEYSLOT_KDF, token: nb.token });
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
      const recoveryToken = { type: TOKEN_RECOVERY, keyslots: [], atrest_created: new Date().toISOString() };
      if (pass !== null) {
        slots.push({
          passphrase: pass,
          kdf: pbkdf,
          ...(e.kind === 'recovery' ? { token: recoveryToken } : {}),
        });
      } else if (e.kind === 'recovery') {
        const fresh = generateRecoveryPassphrase();
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
    const start = 2 * meta.hdrSize;
    const areaOffset = findAreaGap(
      meta.keyslots.map((k) => k.area),
      start,
      start + meta.keyslotsSize,
      AREA_BYTES,
    );
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
    km.auditEvent({ event: 'rotate', volume: image, uuid: meta.uuid, reason: 'reencrypt: new volume key' });
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
