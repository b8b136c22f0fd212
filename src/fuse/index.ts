// FUSE layer: serves each volume as one plaintext regular file (its own mount), plus safe helper spawning, unmounting, and loop devices and mounts over a disk file (blockdev).
export { serveDisk, fuseOptions, type DiskBackend, type ServeDiskOptions } from './serve.js';
export type { FuseDisk } from './fuse-disk.js';
export {
  DEFAULT_FUSE_BACKEND,
  FUSE_BACKENDS,
  fuseSettings,
  requireFuseBackend,
  type FuseBackend,
  type FuseSettings,
} from './backend.js';
export { libfuseAvailable } from './native.js';
export {
  spawnHelper,
  fuseDeviceFds,
  inPrivateMountNamespace,
  type SpawnHelperOptions,
  type SpawnHelperResult,
} from './spawn.js';
export {
  unmountFuse,
  unmountStale,
  fuseMounts,
  fuseMountAt,
  mounts,
  parseMountinfo,
  abortConnection,
  connectionAlive,
  type FuseMountEntry,
  type MountEntry,
  type UnmountOptions,
} from './mounts.js';
export {
  attachLoop,
  detachLoop,
  loopMountPoint,
  mountDevice,
  unmount,
  type MountOptions,
} from './blockdev.js';
