// Image locks: a lock file per image (named by st_dev:st_ino) so two servers never write the same image.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { isHeld, tryLockFile, type HeldLockFile } from '../luks2/lock-file.js';

export { processStartTime } from '../luks2/lock-file.js';

export type ImageLock = HeldLockFile;

/**
 * Takes the lock of `imagePath` in `lockDir`: a file named `DEV-INO.lock` (so every path to the same
 * image maps to one lock) holding the owner's pid and process start time (see tryLockFile: atomic
 * creation, takeover of a lock whose process is gone). Fails with IMAGE_BUSY naming the holder's pid
 * when a live process holds it.
 */
export async function acquireImageLock(imagePath: string, lockDir: string): Promise<ImageLock> {
  let st;
  try {
    st = await stat(imagePath);
  } catch (err) {
    throw fromSystemError(err, imagePath, 'image');
  }
  const r = await tryLockFile(join(lockDir, `${st.dev}-${st.ino}.lock`), imagePath);
  if (isHeld(r)) return r;
  switch (r.kind) {
    case 'held':
      throw new AtrestError('IMAGE_BUSY', `image ${imagePath} is in use by process ${r.pid}`, {
        path: imagePath,
        hint:
          r.pid === process.pid ? 'it is already open in this daemon' : `close it there first (pid ${r.pid})`,
      });
    case 'being-created':
      throw new AtrestError('IMAGE_BUSY', `image ${imagePath} is being locked by another process`, {
        path: imagePath,
        hint: 'try again in a few seconds',
      });
    case 'raced':
      throw new AtrestError('IMAGE_BUSY', `image ${imagePath} was just locked by another process`, {
        path: imagePath,
      });
    case 'contended':
      throw new AtrestError('IMAGE_BUSY', `image ${imagePath} is being locked by another process right now`, {
        path: imagePath,
        hint: 'try again',
      });
  }
}
