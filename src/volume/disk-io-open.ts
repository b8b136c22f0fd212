// PLACEHOLDER (i11-kernel branch only): a plain passthrough DiskIo so the FUSE kernel backend can be built and tested; the real one (XTS, range locks, state word) comes from i11-volume.
import type { Buffer } from 'node:buffer';
import { fdatasyncSync, fsyncSync, readSync, writeSync } from 'node:fs';
import { AtrestError } from '../errors/index.js';
import type { DiskIo, DiskIoDescriptor } from './disk-io.js';

/**
 * PLACEHOLDER, NOT THE DATA PATH: pread/pwrite of `d.fd` at `d.dataOffset`, no encryption, no range
 * locks, no state word. Only for the kernel backend's own tests until the i11-volume helper's
 * openDiskIo replaces this file at merge.
 */
export function openDiskIo(d: DiskIoDescriptor): DiskIo {
  let closed = false;
  const live = (): void => {
    if (closed) throw new AtrestError('LOCKED', `the disk ${d.imagePath} is closed`, { path: d.imagePath });
  };
  return {
    size: d.size,
    readOnly: d.readOnly,
    sectorSize: d.sectorSize,
    readInto(position: number, length: number, out: Buffer): number {
      live();
      const n = Math.max(0, Math.min(length, d.size - position, out.length));
      let done = 0;
      while (done < n) {
        const r = readSync(d.fd, out, done, n - done, d.dataOffset + position + done);
        if (r === 0) {
          out.fill(0, done, n); // sparse tail beyond the image end reads as zeros
          break;
        }
        done += r;
      }
      return n;
    },
    write(position: number, data: Buffer): number {
      live();
      if (d.readOnly) throw new AtrestError('READ_ONLY', `the disk ${d.imagePath} is read-only`);
      const n = Math.max(0, Math.min(data.length, d.size - position));
      let done = 0;
      while (done < n) done += writeSync(d.fd, data, done, n - done, d.dataOffset + position + done);
      return n;
    },
    sync(datasync: boolean): void {
      live();
      if (datasync) fdatasyncSync(d.fd);
      else fsyncSync(d.fd);
    },
    refresh(): boolean {
      return false;
    },
    close(): void {
      closed = true;
    },
  };
}
