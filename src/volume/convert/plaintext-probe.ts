// Whether an image is plaintext to encrypt in place: no LUKS2 header where one would be, and not all random-looking data.
import { open } from 'node:fs/promises';
import { AtrestError, isAtrestError } from '../../errors/index.js';
import { luksRemnants, readLuks2 } from '../../luks2/index.js';

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
