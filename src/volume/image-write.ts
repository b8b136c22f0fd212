// How the image is written through the host page cache: in pieces of at most 32 KiB, so the page cache keeps small folios.
//
// Why: a filesystem with large folios (ext4 since Linux 6.16) caches the image in folios as large as
// the write that created them (a 1 MiB pwrite makes 1 MiB folios). Every later 4 KiB write into such
// a folio walks all of its buffer heads: on this machine a 4 KiB random pwrite into an image filled
// by 1 MiB writes costs ~18 us, into one filled by 4 KiB writes ~3 us, by 64 KiB writes ~6 us
// (measured with 4 KiB pwriteSync loops on ext4, Linux 6.18). Sequential writes in 32 KiB pieces are
// as fast as 1 MiB ones through the page cache, so every image write is cut at 32 KiB.
import { writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { AtrestError } from '../errors/index.js';

/** The largest single pwrite of image data (see above). */
export const IMAGE_WRITE_CHUNK = 32 * 1024;

function noProgress(path: string): AtrestError {
  return new AtrestError('IO', `short write to image ${path}: the filesystem accepted no bytes`, {
    path,
    hint: 'check that the filesystem holding the image is not full or failing',
  });
}

/** Writes all of `buf` at `pos` of `fd` (synchronously, from a serving thread). */
export function writeImageSync(fd: number, buf: Uint8Array, pos: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = writeSync(fd, buf, done, Math.min(IMAGE_WRITE_CHUNK, buf.length - done), pos + done);
    if (n <= 0) throw noProgress(path);
    done += n;
  }
}

/**
 * Writes all of `buf` at `pos` of `fh` (asynchronously, from the main thread), in calls of at most
 * `chunk` bytes (Infinity: as few calls as the kernel takes, e.g. for O_DIRECT or O_DSYNC descriptors,
 * where the page cache keeps no folios or every call flushes the device).
 */
export async function writeImage(
  fh: FileHandle,
  buf: Uint8Array,
  pos: number,
  path: string,
  chunk = IMAGE_WRITE_CHUNK,
): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, Math.min(chunk, buf.length - done), pos + done);
    if (bytesWritten <= 0) throw noProgress(path);
    done += bytesWritten;
  }
}
