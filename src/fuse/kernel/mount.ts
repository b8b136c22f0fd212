// Opens /dev/fuse and mounts it with mount(8) (fd passed as the child's fd 3), in the host's mount namespace when ours is private.
import { spawn } from 'node:child_process';
import { close, constants as fsConstants, open } from 'node:fs';
import { AtrestError } from '../../errors/index.js';
import { fuseMountAt, type FuseMountEntry } from '../mounts.js';
import { hostMountNamespace, inPrivateMountNamespace } from '../spawn.js';

export const FS_SUBTYPE = 'atrest';
export const FS_SOURCE = 'atrest';

/**
 * Opens /dev/fuse read-write. Node opens every file O_CLOEXEC, so children never inherit it (only
 * the mount helper gets it, explicitly, as its fd 3).
 */
export function openFuseDevice(): Promise<number> {
  return new Promise((resolve, reject) => {
    open('/dev/fuse', fsConstants.O_RDWR, (err, fd) => {
      if (err) {
        reject(
          new AtrestError('NO_FUSE', `cannot open /dev/fuse: ${err.code ?? err.message}`, {
            hint: 'load the fuse module (modprobe fuse) and run as root',
            cause: err,
          }),
        );
      } else resolve(fd);
    });
  });
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}

export interface KernelMountOptions {
  uid: number;
  gid: number;
  /** Let other users than the server's reach the file (still subject to its 0600 mode). */
  allowOther?: boolean;
}

/** The -o string for mount(8): a one-file mount (rootmode S_IFREG), kernel permission checks. */
export function kernelMountOptions(o: KernelMountOptions): string {
  const opts = ['fd=3', 'rootmode=100000', `user_id=${o.uid}`, `group_id=${o.gid}`, 'default_permissions'];
  if (o.allowOther === true) opts.push('allow_other');
  return opts.join(',');
}

/**
 * Mounts the FUSE connection behind `fuseFd` on `target` (a regular file). mount(2) returns before
 * the kernel's INIT is answered: serving threads must already be reading the device.
 */
export async function mountFuseFd(
  fuseFd: number,
  target: string,
  options: string,
  timeoutMs: number,
): Promise<void> {
  let file = 'mount';
  // -i: no /sbin/mount.fuse.* helper; the kernel does everything with the fd it is given
  let args = ['-i', '-t', `fuse.${FS_SUBTYPE}`, '-o', options, FS_SOURCE, target];
  if (await inPrivateMountNamespace()) {
    args = [`--mount=${hostMountNamespace()}`, '--', file, ...args];
    file = 'nsenter';
  }
  await new Promise<void>((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe', fuseFd] });
    let stderr = '';
    child.stdout?.resume();
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === 'ENOENT'
          ? new AtrestError('MISSING_TOOL', `${file} is not installed`, {
              hint: 'install util-linux',
              cause: err,
            })
          : new AtrestError('NO_FUSE', `cannot run ${file}: ${err.code ?? err.message}`, { cause: err }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      const why = signal ? `was killed (${signal}) after ${timeoutMs} ms` : `failed (exit ${code})`;
      reject(
        new AtrestError('NO_FUSE', `mounting FUSE on ${target} ${why}: ${stderr.trim() || 'no message'}`, {
          path: target,
          hint: 'check that /dev/fuse exists, that you are root, and that nothing else is mounted there',
        }),
      );
    });
  });
}

/** Waits (briefly) until the mount shows in /proc/self/mountinfo: propagation from the host's namespace is not instant. */
export async function waitForMountEntry(target: string, timeoutMs: number): Promise<FuseMountEntry | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = await fuseMountAt(target);
    if (e !== null && e.fsType === `fuse.${FS_SUBTYPE}`) return e;
    if (Date.now() >= deadline) return null;
    await new Promise((r) => setTimeout(r, 10));
  }
}
