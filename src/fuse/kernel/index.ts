// FUSE kernel backend: speaks the FUSE kernel protocol on /dev/fuse from worker threads (no libfuse, no native code).
export {
  serveDiskKernel,
  type KernelFuseDisk,
  type ClosedBy,
  type KernelStats,
  type ServeDiskKernelOptions,
} from './session.js';
export { kernelMountOptions, FS_SOURCE, FS_SUBTYPE } from './mount.js';
export { negotiateInit, MAX_WRITE, MAX_PAGES, WANTED_FLAGS } from './init.js';
export { FUSE_MIN_MINOR, FUSE_MAX_KNOWN_MINOR } from './abi.js';
