// Starting or resuming an in-place conversion with keys: shared by the daemon (online) and `atrest encrypt` (offline).
import { AtrestError, isAtrestError } from '../errors/index.js';
import type { KeyManager, Unlocked } from '../keys/index.js';
import { formatLuks2, readLuks2, type Luks2Metadata } from '../luks2/index.js';
import { findConversion, startEncrypt, type ConvertPlan, type HeaderRequest } from '../volume/index.js';

export interface ConversionKeys {
  km: KeyManager;
  /** Key file bytes: the new volume's keyslot passphrase (else the platform key, or `kek`). */
  passphrase?: Buffer;
  /** Customer KEK URI for the new volume's keyslot. */
  kek?: string;
  /** PBKDF2 target time for a passphrase keyslot (ms). */
  iterTimeMs?: number;
}

export interface OpenedConversion {
  header: string;
  plan: ConvertPlan;
  meta: Luks2Metadata;
  unlocked: Unlocked;
  started: boolean;
}

/** Whether `image` (with `header`) is plaintext: no LUKS header where one would be. */
export async function isPlaintextImage(image: string, header: string | undefined): Promise<boolean> {
  try {
    await readLuks2(header ?? image, { imagePath: image });
    return false;
  } catch (err) {
    if (isAtrestError(err) && err.code === 'NOT_LUKS2') return header === undefined;
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
    keys: ConversionKeys;
  },
): Promise<OpenedConversion | null> {
  let found = await findConversion(image, opts.header);
  let started = false;
  if (found === null) {
    if (!opts.start || !(await isPlaintextImage(image, opts.header))) return null;
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
  const unlocked = await opts.keys.km.unlock(
    found.meta,
    opts.keys.passphrase === undefined ? {} : { passphrase: opts.keys.passphrase },
  );
  return { header: found.header, plan: found.plan, meta: found.meta, unlocked, started };
}
