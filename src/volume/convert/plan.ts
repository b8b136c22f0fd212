// Starting an in-place encryption: checks that an image can be encrypted in place, plans it, and has the caller create the header carrying the plan and the conversion mark.
import { open, stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SECTOR_SIZES } from '../../crypto/xts.js';
import { AtrestError, fromSystemError } from '../../errors/index.js';
import {
  AREA_BYTES,
  AREA_OFFSET,
  DEFAULT_DATA_OFFSET,
  LUKS2_MAGIC_PRIMARY,
  markConverting,
  MAX_BATCH_BYTES,
  type ConvertPlan,
  type JsonObject,
} from '../../luks2/index.js';
import { sidecarPath } from './sidecar.js';

/** Bytes converted per batch (and per checkpoint): the most a record's sums slot covers. */
export const DEFAULT_BATCH_BYTES = MAX_BATCH_BYTES;

/**
 * Checks that `image` can be encrypted in place and returns the plan (without oldKey). Refuses: not a
 * regular file, read-only, already LUKS2, size not whole sectors, not enough free space for the header.
 */
export async function planEncrypt(
  image: string,
  opts: { sectorSize: number; detachedHeader: boolean; batch?: number },
): Promise<ConvertPlan> {
  const ss = opts.sectorSize;
  let st;
  try {
    st = await stat(image);
  } catch (err) {
    throw fromSystemError(err, image, 'image');
  }
  if (!st.isFile()) throw new AtrestError('USAGE', `${image} is not a regular file`, { path: image });
  try {
    const fh = await open(image, 'r+');
    await fh.close();
  } catch (err) {
    const e = fromSystemError(err, image, 'image');
    if ((err as { code?: unknown }).code === 'EACCES' || (err as { code?: unknown }).code === 'EROFS') {
      throw new AtrestError('READ_ONLY', `${image} is read-only; encrypting it in place needs to write it`, {
        path: image,
        hint: 'make it writable (chmod u+w, or remount read-write) first',
      });
    }
    throw e;
  }
  const head = Buffer.alloc(6);
  const fh = await open(image, 'r');
  try {
    await fh.read(head, 0, 6, 0);
  } finally {
    await fh.close();
  }
  if (head.equals(LUKS2_MAGIC_PRIMARY)) {
    throw new AtrestError('USAGE', `${image} is already a LUKS volume`, {
      path: image,
      hint: 'to move it to a new volume key use `atrest reencrypt`; to open it use `atrest open`',
    });
  }
  if (st.size === 0 || st.size % ss !== 0) {
    const works = SECTOR_SIZES.filter((s) => st.size > 0 && st.size % s === 0);
    throw new AtrestError('USAGE', `${image} is ${st.size} bytes, not a whole number of ${ss}-byte sectors`, {
      path: image,
      hint:
        works.length > 0
          ? `use --sector-size ${works[works.length - 1]} (sizes that divide it: ${works.join(', ')})`
          : 'grow it to a multiple of 512 bytes first (truncate -s)',
    });
  }
  const batch = Math.min(opts.batch ?? DEFAULT_BATCH_BYTES, DEFAULT_BATCH_BYTES);
  const shift = opts.detachedHeader ? 0 : DEFAULT_DATA_OFFSET;
  // room: the header (sidecar now, in the image later) plus the image growing by the shift
  const need = DEFAULT_DATA_OFFSET + shift;
  const fs = await statfs(dirname(image)).catch(() => null);
  if (fs !== null && fs.bavail * fs.bsize < need) {
    throw new AtrestError(
      'NO_SPACE',
      `not enough free space next to ${image}: encrypting in place needs ${need} bytes, ${fs.bavail * fs.bsize} are free`,
      { path: image, hint: 'free some space on that filesystem first' },
    );
  }
  return {
    mode: 'encrypt',
    resilience: opts.detachedHeader ? 'checksum' : 'datashift',
    size: st.size,
    sectorSize: ss,
    sourceOffset: 0,
    targetOffset: shift,
    sourceIvTweak: 0,
    batch,
    area: { offset: AREA_OFFSET, size: AREA_BYTES },
    sidecar: !opts.detachedHeader,
    ...(opts.detachedHeader ? {} : { imageIno: st.ino }),
  };
}

/** What creating a conversion's header needs (the caller picks the key: platform, KEK, passphrase). */
export interface HeaderRequest {
  imagePath: string;
  headerPath: string;
  existingImage: true;
  dataOffset: number;
  dataSize: number;
  sectorSize: 512 | 1024 | 2048 | 4096;
  mutateJson: (json: JsonObject) => void;
}

/**
 * Starts encrypting `image` in place: validates it, then creates the header (sidecar, or the detached
 * `header` file) with the conversion mark and plan. Nothing in the image changes yet; run a Converter.
 */
export async function startEncrypt(
  image: string,
  opts: {
    header?: string;
    sectorSize: 512 | 1024 | 2048 | 4096;
    batch?: number;
    makeHeader: (req: HeaderRequest) => Promise<void>;
  },
): Promise<{ header: string; plan: ConvertPlan }> {
  const plan = await planEncrypt(image, {
    sectorSize: opts.sectorSize,
    detachedHeader: opts.header !== undefined,
    ...(opts.batch === undefined ? {} : { batch: opts.batch }),
  });
  const header = opts.header ?? sidecarPath(image);
  await opts.makeHeader({
    imagePath: image,
    headerPath: header,
    existingImage: true,
    dataOffset: plan.targetOffset,
    dataSize: plan.size,
    sectorSize: opts.sectorSize,
    mutateJson: (json) => markConverting(json, plan),
  });
  return { header, plan };
}
