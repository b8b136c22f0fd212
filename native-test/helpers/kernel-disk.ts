// Native-test helpers for the FUSE kernel backend: a temp image plus a DiskIoDescriptor for it, served with serveDiskKernel.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  serveDiskKernel,
  type KernelFuseDisk,
  type ServeDiskKernelOptions,
} from '../../src/fuse/kernel/index.js';
import type { DiskIoDescriptor } from '../../src/volume/disk-io.js';
import { shOk } from './fuse.js';

export interface KernelTestDisk {
  image: string;
  diskPath: string;
  dataOffset: number;
  descriptor: DiskIoDescriptor;
  disk: KernelFuseDisk;
  /** Unmounts, then closes the image fd (idempotent). */
  close(): Promise<void>;
}

/**
 * A fresh sparse image in `dir` (dataOffset + size bytes) described for the placeholder passthrough
 * DiskIo, served on dir/kdisk-N. `extra` fields are added to the descriptor (tests' own disk modules
 * read them in the workers).
 */
export async function serveKernelTestDisk(
  dir: string,
  opts: { size?: number; readOnly?: boolean; extra?: Record<string, unknown> } & Partial<
    Omit<ServeDiskKernelOptions, 'disk' | 'mountPath'>
  > = {},
): Promise<KernelTestDisk> {
  const { size = 64 * 1024 * 1024, readOnly = false, extra = {}, ...serve } = opts;
  const dataOffset = 1024 * 1024;
  const id = randomBytes(3).toString('hex');
  const image = join(dir, `kimage-${id}`);
  const diskPath = join(dir, `kdisk-${id}`);
  await writeFile(image, '');
  await shOk(`truncate -s ${dataOffset + size} ${image}`);
  const fd = openSync(image, readOnly ? 'r' : 'r+');
  const descriptor: DiskIoDescriptor = {
    fd,
    imagePath: image,
    size,
    readOnly,
    sectorSize: 4096,
    dataOffset,
    ivTweak: 0,
    state: new SharedArrayBuffer(256),
    locks: new SharedArrayBuffer(4096),
    keyring: new SharedArrayBuffer(4096),
    ...extra,
  };
  let disk: KernelFuseDisk;
  try {
    disk = await serveDiskKernel({ mountPath: diskPath, disk: descriptor, ...serve });
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  let closing: Promise<void> | null = null;
  return {
    image,
    diskPath,
    dataOffset,
    descriptor,
    disk,
    close: () =>
      (closing ??= (async () => {
        try {
          await disk.close();
        } finally {
          closeSync(fd);
        }
      })()),
  };
}
