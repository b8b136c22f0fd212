// serveDisk's kernel backend entry: hands a volume's shared-memory descriptor to src/fuse/kernel's server.
import type { DiskIoDescriptor } from '../volume/disk-io.js';
import { serveDiskKernel } from './kernel/index.js';
import type { FuseDisk } from './fuse-disk.js';

/** What serveDisk hands the kernel backend (the shape of src/fuse/kernel/index.ts serveDiskKernel's options). */
export interface KernelServeOptions {
  mountPath: string;
  disk: DiskIoDescriptor;
  workers?: number;
  maxMinor?: number;
  mountTimeoutMs?: number;
  unmountTimeoutMs?: number;
}

/** A disk file served by the kernel backend: it can make every worker drop its key schedules. */
export type KernelFuseDisk = FuseDisk & { backend: 'kernel'; dropKeys(): Promise<boolean> };

/** Serves a disk through the FUSE kernel-protocol backend (src/fuse/kernel). */
export function serveKernel(opts: KernelServeOptions): Promise<KernelFuseDisk> {
  return serveDiskKernel(opts);
}
