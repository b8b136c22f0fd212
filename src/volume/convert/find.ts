// Finding an image's in-place conversion: the sidecar or converting header and its plan, or the leftover progress records of a finished one.
import { open, unlink } from 'node:fs/promises';
import { isAtrestError } from '../../errors/index.js';
import {
  AREA_OFFSET,
  decodeRecordSlots,
  planOf,
  readLuks2,
  RECORD_BYTES,
  type ConvertPlan,
  type Luks2Metadata,
} from '../../luks2/index.js';
import { checkSidecarIdentity, sameSidecar, sidecarPath, trustedSidecar } from './sidecar.js';

/**
 * Whether the header of a finished LUKS2 volume still holds the progress records of the in-place
 * conversion that made it (the run was interrupted after its very last step that mattered).
 */
export async function finishedConversion(header: string): Promise<boolean> {
  const fh = await open(header, 'r').catch(() => null);
  if (fh === null) return false;
  try {
    const buf = Buffer.alloc(2 * RECORD_BYTES);
    await fh.read(buf, 0, buf.length, AREA_OFFSET);
    return decodeRecordSlots(buf).some((r) => r.front === 0);
  } finally {
    await fh.close();
  }
}

/**
 * Where an image's conversion state is, if any: the sidecar (attached encrypt under way), or a
 * converting header (detached, or reencrypt). A sidecar left behind after the image header was
 * finalized is removed here.
 */
export async function findConversion(
  image: string,
  header: string | undefined,
): Promise<{ header: string; meta: Luks2Metadata; plan: ConvertPlan } | null> {
  if (header === undefined) {
    const side = sidecarPath(image);
    // only a sidecar root made and alone can change is used, and only for the image its plan names
    const st = await trustedSidecar(side);
    if (st !== null) {
      const sideMeta = await readLuks2(side, { imagePath: image });
      await sameSidecar(side, st);
      // finished but not cleaned up? the image then starts with the final header of the same volume
      const own = await readLuks2(image).catch(() => null);
      if (own !== null && own.uuid === sideMeta.uuid && !own.converting) {
        await unlink(side).catch(() => undefined);
        return null;
      }
      const plan = planOf(sideMeta);
      await checkSidecarIdentity(side, image, plan);
      return { header: side, meta: sideMeta, plan };
    }
  }
  const h = header ?? image;
  let meta: Luks2Metadata;
  try {
    meta = await readLuks2(h, { imagePath: image });
  } catch (err) {
    if (isAtrestError(err) && err.code === 'NOT_LUKS2') return null;
    // a detached header not written yet: nothing started
    if (isAtrestError(err) && err.code === 'FILE_NOT_FOUND' && header !== undefined) return null;
    throw err;
  }
  if (!meta.converting) return null;
  return { header: h, meta, plan: planOf(meta) };
}
