// FUSE layer: serves each volume as one plaintext regular file (its own mount), plus safe helper spawning and unmounting.
export { serveDisk, fuseOptions, type DiskBackend, type FuseDisk, type ServeDiskOptions } from './serve.js';
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
