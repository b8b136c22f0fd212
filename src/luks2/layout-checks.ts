// Where a volume's headers and data lie, refused when unsafe to serve: data the image does not hold, data over its own header, a header copy to repair over another signature.
import type { Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { AtrestError } from '../errors/index.js';
import { foreignSignature } from './signatures.js';

/**
 * Which files hold a data segment and where it lies in the image: the part of the metadata the fit
 * checks read. (How the segment's bytes map to image offsets and XTS tweaks is volume/data-layout.ts.)
 */
export type DataExtent = {
  headerPath: string;
  imagePath: string;
  dataOffset: number;
  dataSize: number | 'dynamic';
};

export function dataFits(meta: DataExtent, imageSize: number): boolean {
  const end = meta.dataOffset + (meta.dataSize === 'dynamic' ? 0 : meta.dataSize);
  return !(imageSize < end || (meta.dataSize === 'dynamic' && imageSize < meta.dataOffset + 512));
}

/** Refuses serving a data segment the image does not hold (header-only commands do not need it). */
export function checkFits(meta: DataExtent, imageSize: number): void {
  if (dataFits(meta, imageSize)) return;
  if (imageSize <= meta.dataOffset) {
    throw new AtrestError(
      'TRUNCATED_IMAGE',
      `${meta.imagePath} holds no data: it is ${imageSize} bytes and its data segment starts at byte ${meta.dataOffset}`,
      {
        path: meta.imagePath,
        hint:
          meta.imagePath === meta.headerPath
            ? 'if it is a header backup or a detached header, pass it with --header together with the data image; if the image was cut short, restore it from a backup'
            : 'check that the data image is the right file; if it was cut short, restore it from a backup',
      },
    );
  }
  throw new AtrestError(
    'TRUNCATED_IMAGE',
    `${meta.imagePath} is ${imageSize} bytes, shorter than its data segment (offset ${meta.dataOffset}, size ${String(meta.dataSize)})`,
    { path: meta.imagePath, hint: 'the image was truncated: restore it from a backup or grow it back' },
  );
}

/** Like cryptsetup: a damaged or stale header copy is never used or rewritten over another signature. */
export async function refuseForeignSignature(
  fh: FileHandle,
  path: string,
  hdrSize: number,
  why: string,
): Promise<void> {
  const sig = await foreignSignature(fh, 2 * hdrSize);
  if (sig === null) return;
  throw new AtrestError(
    'CORRUPT_HEADER',
    `${path}: ${why}, and the file also holds ${sig}; atrest neither uses nor repairs a LUKS2 header over another signature`,
    {
      path,
      hint: 'find out what the file really is; if it is this LUKS2 volume, back it up and run "cryptsetup repair" on it',
    },
  );
}

/** Refuses a data segment that overlaps the header and key slots of the same file (e.g. offset 0, attached). */
export function refuseDataOverHeader(
  headerPath: string,
  headerStat: Stats,
  imageStat: Stats,
  dataOffset: number,
  metadataEnd: number,
): void {
  const sameFile = imageStat.dev === headerStat.dev && imageStat.ino === headerStat.ino;
  if (!sameFile || dataOffset >= metadataEnd) return;
  throw new AtrestError(
    'UNSUPPORTED',
    `${headerPath}: the data segment starts at byte ${dataOffset} of the same file that holds the LUKS2 header and key slots (${metadataEnd} bytes); serving it would expose and overwrite them`,
    {
      path: headerPath,
      hint: 'if this is a detached header, pass the data image separately (atrest ... DATA-IMAGE --header THIS-FILE); otherwise restore the header from a backup',
    },
  );
}
