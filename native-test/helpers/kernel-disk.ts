// Native-test helpers for the FUSE kernel backend: a temp image plus a DiskIoDescriptor for it, served with serveDiskKernel.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  serveDiskKernel,
  type KernelFuseDisk,
  type ServeDiskKernelOptions,
} from '../../src/fuse/kernel/index.js';
import type { DiskIoDescriptor } from '../../src/volume/disk-io.js';
import { Volume } from '../../src/volume/index.js';
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
 * A fresh sparse image in `dir` (dataOffset + size bytes) opened as an unencrypted Volume (the
 * real DiskIo, identity cipher), served on dir/kdisk-N. `extra` fields are added to the descriptor (tests' own disk modules
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
  // an unencrypted volume (key null: identity), so tests can read what they wrote straight from the image
  const volume = await Volume.open({
    imagePath: image,
    dataOffset,
    dataSize: size,
    sectorSize: 4096,
    ivTweak: 0,
    key: null,
    readOnly,
  });
  const descriptor: DiskIoDescriptor = { ...volume.descriptor(), ...extra };
  let disk: KernelFuseDisk;
  try {
    disk = await serveDiskKernel({ mountPath: diskPath, disk: descriptor, ...serve });
  } catch (err) {
    await volume.close();
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
          await volume.close();
        }
      })()),
  };
}
