// serveDisk's kernel backend entry: the one place the lead wires src/fuse/kernel's serveDiskKernel in at merge.
import type { DiskIoDescriptor } from '../volume/disk-io.js';
import { AtrestError } from '../errors/index.js';
import type { FuseDisk } from './serve.js';

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

/**
 * Serves a disk through the FUSE kernel-protocol backend.
 *
 * MERGE (i11-kernel): replace this body with
 *   `return serveDiskKernel(opts);`
 * and add `import { serveDiskKernel } from './kernel/index.js';` above. Nothing else changes.
 */
export async function serveKernel(opts: KernelServeOptions): Promise<KernelFuseDisk> {
  await Promise.resolve();
  throw new AtrestError(
    'UNSUPPORTED',
    `the kernel FUSE backend is not built in this branch (${opts.mountPath})`,
    {
      hint: 'serve it with the libfuse fallback: atrest daemon --fuse-backend libfuse (or ATREST_FUSE_BACKEND=libfuse)',
    },
  );
}
