// What some commands need of the machine before they start: root, and an accessible /dev/fuse.
import { access, constants as fsConstants } from 'node:fs/promises';
import { AtrestError } from '../errors/index.js';

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new AtrestError('NOT_ROOT', 'atrest must run as root to serve volumes', {
      hint: 'run it with sudo',
    });
  }
}

export async function requireFuse(): Promise<void> {
  try {
    await access('/dev/fuse', fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    throw new AtrestError('NO_FUSE', '/dev/fuse is missing or not accessible', {
      hint: 'load the fuse module (modprobe fuse) and install libfuse2 (apt-get install libfuse2 fuse3)',
    });
  }
}
