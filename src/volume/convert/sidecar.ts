// The sidecar header of an attached-header encryption (IMAGE.atrest-convert.hdr): its path, the trust checks before it overrides the image, and the operator's adoption of it after a copy.
import { lstat, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { AtrestError, fromSystemError } from '../../errors/index.js';
import { planOf, readLuks2, setPlanImageIno, writeMetadata } from '../../luks2/index.js';

const SIDECAR_SUFFIX = '.atrest-convert.hdr';

/** Where the header of IMAGE's attached-header encryption lives until it is finalized. */
export function sidecarPath(image: string): string {
  return `${image}${SIDECAR_SUFFIX}`;
}

const ADOPT =
  "if it is this image's own sidecar (the image was copied or restored with it), confirm with `atrest encrypt IMAGE --adopt-sidecar`";

/**
 * The sidecar's lstat when it exists and may be trusted: a regular file (not a symlink), owned by the
 * user atrest runs as (root), not writable by group or others. null when there is none; a refusal
 * naming the file otherwise (anyone who could plant or change it could make atrest serve or rewrite
 * the image under a header of their choosing).
 */
export async function trustedSidecar(side: string): Promise<Stats | null> {
  let st: Stats;
  try {
    st = await lstat(side);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return null;
    throw fromSystemError(err, side, 'header');
  }
  const euid = process.geteuid?.() ?? 0;
  const why = st.isSymbolicLink()
    ? 'is a symbolic link'
    : !st.isFile()
      ? 'is not a regular file'
      : st.uid !== euid
        ? `is owned by uid ${st.uid}, not by ${euid === 0 ? 'root' : `uid ${euid}`}`
        : (st.mode & 0o022) !== 0
          ? `is writable by ${(st.mode & 0o020) !== 0 ? 'its group' : 'others'} (mode ${(st.mode & 0o777).toString(8)})`
          : null;
  if (why !== null) {
    throw new AtrestError(
      'CORRUPT_HEADER',
      `${side} ${why}: not using it as the header of an in-place encryption`,
      {
        path: side,
        hint: 'if atrest made it, restore it as a regular file owned by root with mode 0600 (chown root, chmod 600); otherwise remove it',
      },
    );
  }
  return st;
}

/** Refuses a sidecar that changed between its check and its use. */
export async function sameSidecar(side: string, before: Stats): Promise<void> {
  const st = await trustedSidecar(side);
  if (st === null || st.ino !== before.ino || st.dev !== before.dev) {
    throw new AtrestError('CORRUPT_HEADER', `${side} changed while atrest was reading it`, {
      path: side,
      hint: 'make sure nothing else writes next to the image, then try again',
    });
  }
}

/**
 * Refuses a sidecar whose plan does not name this image: the plan records the image's inode number
 * when the encryption starts (stable across reboots and renames, unlike device numbers; a copy or a
 * restore makes a new inode, which the operator confirms with --adopt-sidecar), and the image must
 * have one of the two sizes the conversion gives it (plaintext, or grown by the header's room).
 */
export async function checkSidecarIdentity(
  side: string,
  image: string,
  plan: { sidecar: boolean; imageIno?: number; size: number; targetOffset: number },
): Promise<void> {
  let st: Stats;
  try {
    st = await stat(image);
  } catch (err) {
    throw fromSystemError(err, image, 'image');
  }
  const problem = !plan.sidecar
    ? 'its plan is not an attached-header encryption'
    : plan.imageIno === undefined
      ? 'its plan does not name the image it belongs to (made by an older atrest)'
      : plan.imageIno !== st.ino
        ? `its plan names the file with inode ${plan.imageIno}, and ${image} is inode ${st.ino}`
        : st.size !== plan.size && st.size !== plan.targetOffset + plan.size
          ? `its plan is for a ${plan.size}-byte image, and ${image} is ${st.size} bytes`
          : null;
  if (problem !== null) {
    throw new AtrestError('CORRUPT_HEADER', `${side} does not belong to ${image}: ${problem}`, {
      path: side,
      hint: `${ADOPT}; otherwise remove or move the sidecar away`,
    });
  }
}

/**
 * The operator's confirmation that IMAGE's sidecar belongs to it after the image was copied or
 * restored together with it (a new inode): the sidecar's plan is rebound to the image as it is now.
 * The sidecar must still pass the ownership and mode checks.
 */
export async function adoptSidecar(image: string): Promise<void> {
  const side = sidecarPath(image);
  const st = await trustedSidecar(side);
  if (st === null) {
    throw new AtrestError('FILE_NOT_FOUND', `${image} has no sidecar ${side} to adopt`, { path: side });
  }
  const meta = await readLuks2(side, { imagePath: image });
  await sameSidecar(side, st);
  const plan = planOf(meta);
  if (!plan.sidecar) {
    throw new AtrestError('CORRUPT_HEADER', `${side} is not the sidecar of an attached-header encryption`, {
      path: side,
    });
  }
  const ino = (await stat(image)).ino;
  await checkSidecarIdentity(side, image, { ...plan, imageIno: ino });
  const json = structuredClone(meta.json);
  setPlanImageIno(json, ino);
  await writeMetadata(meta, json);
}
