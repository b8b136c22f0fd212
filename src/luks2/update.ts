// updateLuks2: a header read-modify-write under the metadata lock, on the header as it is on disk now.
import { AtrestError } from '../errors/index.js';
import { withMetadataLock } from './metadata-lock.js';
import { readLuks2, type Luks2Metadata } from './volume.js';

/**
 * Takes the metadata lock of `meta.headerPath`, re-reads the header, runs `fn` on that fresh copy
 * (which writes through addKeyslot, removeKeyslot, setToken, writeMetadata...), then releases the lock
 * and copies the result into `meta`. Refuses when the file now holds another volume (UUID changed).
 * Do the slow parts that need no header (unlocking with a passphrase, KEK calls, benchmarks) before.
 */
export async function updateLuks2<T>(
  meta: Luks2Metadata,
  fn: (fresh: Luks2Metadata) => Promise<T>,
): Promise<T> {
  return withMetadataLock(meta.headerPath, async () => {
    const fresh = await readLuks2(meta.headerPath, { imagePath: meta.imagePath });
    if (fresh.uuid !== meta.uuid) {
      throw new AtrestError(
        'IMAGE_BUSY',
        `${meta.headerPath} now holds another LUKS2 volume (UUID ${fresh.uuid}, was ${meta.uuid})`,
        { path: meta.headerPath, hint: 'check what replaced the header, then try again' },
      );
    }
    try {
      return await fn(fresh);
    } finally {
      Object.assign(meta, fresh);
    }
  });
}
