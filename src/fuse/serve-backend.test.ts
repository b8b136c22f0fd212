// serveDisk picks the backend: kernel (default) gets the disk's shared-memory descriptor and the worker settings.
import type { Buffer } from 'node:buffer';
import { describe, expect, it, vi } from 'vitest';
import type { DiskIoDescriptor } from '../volume/disk-io.js';
import type { KernelServeOptions } from './serve-kernel.js';
import { serveDisk, type DiskBackend } from './serve.js';
import { isAtrestError } from '../errors/index.js';

const calls: KernelServeOptions[] = [];
vi.mock('./serve-kernel.js', () => ({
  serveKernel: (opts: KernelServeOptions) => {
    calls.push(opts);
    return Promise.resolve({
      mountPath: opts.mountPath,
      backend: 'kernel',
      connection: 7,
      options: '',
      inFlight: 0,
      close: () => Promise.resolve(),
      dropKeys: () => Promise.resolve(true),
    });
  },
}));

const descriptor = { fd: 3, size: 4096 } as unknown as DiskIoDescriptor;
const disk: DiskBackend = {
  size: 4096,
  readOnly: false,
  read: () => Promise.reject<Buffer>(new Error('not used')),
  write: () => Promise.reject<number>(new Error('not used')),
  fsync: () => Promise.resolve(),
  descriptor: () => descriptor,
};

describe('serveDisk backend choice', () => {
  it('serves with the kernel backend by default, handing over descriptor, workers and minor', async () => {
    const d = await serveDisk({ mountPath: '/run/x/../atrest-test/a', disk, workers: 2, maxMinor: 36 });
    expect(d.backend).toBe('kernel');
    expect(await d.dropKeys?.()).toBe(true);
    expect(calls.at(-1)).toEqual({
      mountPath: '/run/atrest-test/a',
      disk: descriptor,
      workers: 2,
      maxMinor: 36,
    });
    await serveDisk({ mountPath: '/run/atrest-test/b', disk, backend: 'kernel', mountTimeoutMs: 5 });
    expect(calls.at(-1)).toEqual({ mountPath: '/run/atrest-test/b', disk: descriptor, mountTimeoutMs: 5 });
  });

  it('refuses a disk without a descriptor on the kernel backend, before mounting', async () => {
    const n = calls.length;
    const plain: DiskBackend = { ...disk };
    delete plain.descriptor;
    const err: unknown = await serveDisk({ mountPath: '/run/atrest-test/c', disk: plain }).catch(
      (e: unknown) => e,
    );
    expect(isAtrestError(err) && err.code).toBe('UNSUPPORTED');
    expect(calls.length).toBe(n);
  });
});
