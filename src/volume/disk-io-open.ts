// openDiskIo: a serving thread's synchronous handle on a volume, from the descriptor the main thread's Volume hands out.
import { AtrestError } from '../errors/index.js';
import type { DiskIo, DiskIoDescriptor } from './disk-io.js';
import { SectorIo } from './sector-io.js';
import { STATE_BYTES } from './shared-volume.js';
import { LOCK_BYTES } from './shared-range-lock.js';

/**
 * Opens the volume described by `d` in this thread: builds nothing until the first request (key
 * schedules are made from the keyring slot on first use and cached per thread). The image fd belongs
 * to the Volume; close() here only wipes this thread's keys.
 */
export function openDiskIo(d: DiskIoDescriptor): DiskIo {
  if (
    !Number.isInteger(d.fd) ||
    d.fd < 0 ||
    !(d.state instanceof SharedArrayBuffer) ||
    d.state.byteLength !== STATE_BYTES ||
    !(d.locks instanceof SharedArrayBuffer) ||
    d.locks.byteLength !== LOCK_BYTES ||
    !(d.keyring instanceof SharedArrayBuffer)
  ) {
    throw new AtrestError('INTERNAL', `not a volume descriptor (image ${String(d.imagePath)})`);
  }
  return new SectorIo(d);
}
