// Block devices over a served disk file: attach/detach a loop device (losetup), mount/unmount a filesystem on it.
// Like cryptsetup's utils_loop.c: each helper runs one outside program through spawnHelper (no /dev/fuse leaks into
// it, always under a timeout), so the process serving the disk file never blocks on its own mount.
import { AtrestError } from '../errors/index.js';
import { mounts } from './mounts.js';
import { spawnHelper } from './spawn.js';

/** Attaches a loop device to `file` with the volume's sector size; returns its path (/dev/loopN). */
export async function attachLoop(file: string, sectorSize: number, readOnly: boolean): Promise<string> {
  const args = ['--find', '--show', '--sector-size', String(sectorSize)];
  if (readOnly) args.push('--read-only');
  args.push(file);
  const r = await spawnHelper('losetup', args, { timeoutMs: 30_000 });
  const dev = r.stdout.trim();
  if (r.code !== 0 || !dev.startsWith('/dev/loop')) {
    throw new AtrestError(
      'IO',
      `could not attach a loop device to ${file}: ${r.stderr.trim() || 'losetup failed'}`,
      {
        hint: 'check that the loop module is loaded (modprobe loop) and free loop devices exist',
      },
    );
  }
  return dev;
}

/** Detaches a loop device attachLoop made. */
export async function detachLoop(dev: string): Promise<void> {
  const r = await spawnHelper('losetup', ['-d', dev], { timeoutMs: 30_000 });
  if (r.code !== 0) {
    throw new AtrestError('IMAGE_BUSY', `could not detach ${dev}: ${r.stderr.trim()}`, {
      hint: 'stop what uses the loop device and close again',
    });
  }
}

/** Where a block device is mounted (null when it is not). */
export async function loopMountPoint(dev: string): Promise<string | null> {
  return (await mounts()).find((m) => m.source === dev)?.mountPoint ?? null;
}

export interface MountOptions {
  /** Filesystem type (mount -t). */
  fstype: string;
  /** Extra mount options (mount -o), comma separated. */
  options?: string;
  readOnly: boolean;
}

/** Mounts the filesystem on `dev` at `path` (an existing directory), in the host's mount namespace. */
export async function mountDevice(dev: string, path: string, o: MountOptions): Promise<void> {
  const args = ['-t', o.fstype];
  const opts = [o.readOnly ? 'ro' : '', o.options ?? ''].filter(Boolean).join(',');
  if (opts) args.push('-o', opts);
  const r = await spawnHelper('mount', [...args, dev, path], {
    timeoutMs: 60_000,
    hostMounts: true,
  });
  if (r.code !== 0) {
    throw new AtrestError('IO', `could not mount ${dev} on ${path}: ${r.stderr.trim()}`, {
      hint: 'check the filesystem type, or make one first (mkfs) on the loop device',
    });
  }
}

/** Unmounts a filesystem the daemon mounted (lazy as a last resort, so stop never hangs). */
export async function unmount(path: string): Promise<void> {
  const r = await spawnHelper('umount', [path], { timeoutMs: 60_000, hostMounts: true });
  if (r.code === 0) return;
  const lazy = await spawnHelper('umount', ['-l', path], { timeoutMs: 30_000, hostMounts: true });
  if (lazy.code !== 0) {
    throw new AtrestError('IMAGE_BUSY', `could not unmount ${path}: ${r.stderr.trim()}`, {
      hint: 'stop what uses it and try again',
    });
  }
}
