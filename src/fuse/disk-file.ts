// The mount point of a served disk: a regular file claimed before mounting and removed after unmounting if we made it.
import { stat, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AtrestError, errnoOf } from '../errors/index.js';
import { fuseMountAt } from './mounts.js';

export interface DiskFile {
  /** Whether we created it (then removeDiskFile takes it away again). */
  readonly created: boolean;
  /** The device of its directory: a stat of the file showing another one proves the mount is up. */
  readonly parentDev: number;
}

/**
 * Makes `mountPath` (absolute) ready to mount on: refuses NAME_IN_USE when something is mounted
 * there, creates it empty (0600) if missing, refuses anything but a regular file.
 */
export async function claimDiskFile(mountPath: string): Promise<DiskFile> {
  if ((await fuseMountAt(mountPath)) !== null) {
    throw new AtrestError('NAME_IN_USE', `something is already mounted on ${mountPath}`, {
      path: mountPath,
      hint: 'close the volume using it, or run scripts/cleanup',
    });
  }
  let created = false;
  try {
    await writeFile(mountPath, '', { flag: 'wx', mode: 0o600 });
    created = true;
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'EEXIST') {
      throw new AtrestError('IO', `cannot create the disk file ${mountPath}: ${errnoOf(err)}`, {
        path: mountPath,
      });
    }
    const st = await stat(mountPath);
    if (!st.isFile()) {
      throw new AtrestError('USAGE', `${mountPath} exists and is not a regular file`, { path: mountPath });
    }
  }
  return { created, parentDev: (await stat(dirname(mountPath))).dev };
}

/**
 * After the unmount: removes the file if we created it and it is still our empty regular file with
 * nothing mounted on it. When `failed` (mounting never came up), removes it without those checks.
 */
export async function removeDiskFile(mountPath: string, file: DiskFile, failed = false): Promise<void> {
  if (!file.created) return;
  if (!failed) {
    const st = await stat(mountPath).catch(() => null);
    if (st === null || !st.isFile() || st.size !== 0 || (await fuseMountAt(mountPath)) !== null) return;
  }
  await unlink(mountPath).catch(() => undefined);
}
