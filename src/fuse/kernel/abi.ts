// The FUSE kernel protocol (include/uapi/linux/fuse.h): opcodes, flags, struct sizes and field offsets, little-endian.

/** Protocol major version this server speaks. */
export const FUSE_KERNEL_VERSION = 7;
/** Highest minor this server knows (Linux 6.18 offers 7.45). */
export const FUSE_MAX_KNOWN_MINOR = 45;
/**
 * Lowest minor this server accepts: 7.31 (Linux 5.8). Below that the structs this file describes
 * differ (fuse_attr.flags arrived in 7.32 as former padding, so 7.31 still has the same sizes).
 */
export const FUSE_MIN_MINOR = 31;
export const FUSE_ROOT_ID = 1;
/** The kernel refuses a read(2) of /dev/fuse into a smaller buffer. */
export const FUSE_MIN_READ_BUFFER = 8192;

export const Op = {
  LOOKUP: 1,
  FORGET: 2, // no reply
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42, // no reply
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
  COPY_FILE_RANGE_64: 53,
} as const;
export type Opcode = (typeof Op)[keyof typeof Op];
/** Highest opcode number counted in per-opcode statistics (anything above lands in slot 0). */
export const OP_SLOTS = 64;

/** INIT flags (fuse_init_in/out.flags); bits 32..63 travel in flags2 when FUSE_INIT_EXT is set. */
export const Init = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  FILE_OPS: 1 << 2,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  SPLICE_WRITE: 1 << 7,
  SPLICE_MOVE: 1 << 8,
  SPLICE_READ: 1 << 9,
  FLOCK_LOCKS: 1 << 10,
  HAS_IOCTL_DIR: 1 << 11,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15, // 7.22
  WRITEBACK_CACHE: 1 << 16, // 7.23
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18, // 7.25
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21, // 7.27
  MAX_PAGES: 1 << 22, // 7.28
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  MAP_ALIGNMENT: 1 << 26,
  SUBMOUNTS: 1 << 27,
  HANDLE_KILLPRIV_V2: 1 << 28, // 7.33
  SETXATTR_EXT: 1 << 29,
  INIT_EXT: 1 << 30, // 7.36: flags2 valid, init_in is 64 bytes
  INIT_RESERVED: 1 << 31,
} as const;

/** INIT flags2 bits (the FUSE_* flags 1ULL << 32 and up, shifted down by 32). */
export const Init2 = {
  SECURITY_CTX: 1 << 0,
  HAS_INODE_DAX: 1 << 1,
  CREATE_SUPP_GROUP: 1 << 2,
  HAS_EXPIRE_ONLY: 1 << 3,
  DIRECT_IO_ALLOW_MMAP: 1 << 4,
  PASSTHROUGH: 1 << 5,
  NO_EXPORT_SUPPORT: 1 << 6,
  HAS_RESEND: 1 << 7,
  ALLOW_IDMAP: 1 << 8,
  OVER_IO_URING: 1 << 9,
  REQUEST_TIMEOUT: 1 << 10,
} as const;

/** fuse_open_out.open_flags. */
export const Fopen = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5, // 7.35
  PARALLEL_DIRECT_WRITES: 1 << 6, // 7.38
  PASSTHROUGH: 1 << 7, // 7.40
} as const;
export const FOPEN_PARALLEL_DIRECT_WRITES_MINOR = 38;

/** fuse_setattr_in.valid bits. */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11, // 7.33
} as const;

export const FSYNC_FDATASYNC = 1 << 0;
export const GETATTR_FH = 1 << 0;
/** Set in the unique id of an INTERRUPT request (never of a normal one). */
export const FUSE_INT_REQ_BIT = 1n;

/** fallocate(2) modes (linux/falloc.h). */
export const Falloc = {
  KEEP_SIZE: 0x01,
  PUNCH_HOLE: 0x02,
  NO_HIDE_STALE: 0x04,
  COLLAPSE_RANGE: 0x08,
  ZERO_RANGE: 0x10,
  INSERT_RANGE: 0x20,
  UNSHARE_RANGE: 0x40,
} as const;

/** Struct sizes in bytes (current layout unless named COMPAT). */
export const Size = {
  IN_HEADER: 40,
  OUT_HEADER: 16,
  /** fuse_init_in before 7.36 (no flags2, no reserved words). */
  INIT_IN_COMPAT: 16,
  INIT_IN: 64,
  /** fuse_init_out up to 7.4 and 7.5..7.22 (FUSE_COMPAT_INIT_OUT_SIZE / FUSE_COMPAT_22_INIT_OUT_SIZE). */
  INIT_OUT_COMPAT: 8,
  INIT_OUT_COMPAT_22: 24,
  INIT_OUT: 64,
  ATTR: 88,
  /** fuse_attr_out / fuse_entry_out before 7.9 (no blksize/padding in fuse_attr). */
  ATTR_OUT_COMPAT: 96,
  ATTR_OUT: 104,
  ENTRY_OUT_COMPAT: 120,
  ENTRY_OUT: 128,
  GETATTR_IN: 16,
  SETATTR_IN: 88,
  OPEN_IN: 8,
  OPEN_OUT: 16,
  READ_IN: 40,
  /** fuse_write_in before 7.9. */
  WRITE_IN_COMPAT: 24,
  WRITE_IN: 40,
  WRITE_OUT: 8,
  RELEASE_IN: 24,
  FLUSH_IN: 24,
  FSYNC_IN: 16,
  KSTATFS: 80,
  STATFS_OUT_COMPAT: 48,
  ACCESS_IN: 8,
  INTERRUPT_IN: 8,
  FORGET_IN: 8,
  BATCH_FORGET_IN: 8,
  FORGET_ONE: 16,
  FALLOCATE_IN: 32,
  IOCTL_IN: 32,
  IOCTL_OUT: 16,
  GETXATTR_IN: 8,
  GETXATTR_OUT: 8,
  LSEEK_IN: 24,
  LSEEK_OUT: 8,
} as const;

/** Field offsets inside fuse_in_header. */
export const InHeader = {
  len: 0,
  opcode: 4,
  unique: 8,
  nodeid: 16,
  uid: 24,
  gid: 28,
  pid: 32,
  totalExtlen: 36, // u16, 7.38: extension length in 8-byte units
  padding: 38,
} as const;

/** Field offsets inside fuse_out_header. */
export const OutHeader = { len: 0, error: 4, unique: 8 } as const;

export const InitIn = { major: 0, minor: 4, maxReadahead: 8, flags: 12, flags2: 16 } as const;
export const InitOut = {
  major: 0,
  minor: 4,
  maxReadahead: 8,
  flags: 12,
  maxBackground: 16, // u16
  congestionThreshold: 18, // u16
  maxWrite: 20,
  timeGran: 24,
  maxPages: 28, // u16
  mapAlignment: 30, // u16
  flags2: 32,
  maxStackDepth: 36,
  requestTimeout: 40, // u16, 7.43
} as const;

/** fuse_attr (88 bytes). */
export const Attr = {
  ino: 0,
  size: 8,
  blocks: 16,
  atime: 24,
  mtime: 32,
  ctime: 40,
  atimensec: 48,
  mtimensec: 52,
  ctimensec: 56,
  mode: 60,
  nlink: 64,
  uid: 68,
  gid: 72,
  rdev: 76,
  blksize: 80,
  flags: 84,
} as const;
/** fuse_attr_out: attr_valid u64, attr_valid_nsec u32, dummy u32, then fuse_attr. */
export const AttrOut = { attrValid: 0, attrValidNsec: 8, attr: 16 } as const;

export const GetattrIn = { flags: 0, fh: 8 } as const;
export const SetattrIn = {
  valid: 0,
  fh: 8,
  size: 16,
  lockOwner: 24,
  atime: 32,
  mtime: 40,
  ctime: 48,
  atimensec: 56,
  mtimensec: 60,
  ctimensec: 64,
  mode: 68,
  uid: 76,
  gid: 80,
} as const;
export const OpenIn = { flags: 0, openFlags: 4 } as const;
export const OpenOut = { fh: 0, openFlags: 8, backingId: 12 } as const;
export const ReadIn = { fh: 0, offset: 8, size: 16, readFlags: 20, lockOwner: 24, flags: 32 } as const;
export const WriteIn = { fh: 0, offset: 8, size: 16, writeFlags: 20, lockOwner: 24, flags: 32 } as const;
export const ReleaseIn = { fh: 0, flags: 8, releaseFlags: 12, lockOwner: 16 } as const;
export const FlushIn = { fh: 0, lockOwner: 16 } as const;
export const FsyncIn = { fh: 0, fsyncFlags: 8 } as const;
export const AccessIn = { mask: 0 } as const;
export const InterruptIn = { unique: 0 } as const;
export const ForgetIn = { nlookup: 0 } as const;
export const BatchForgetIn = { count: 0 } as const;
export const FallocateIn = { fh: 0, offset: 8, length: 16, mode: 24 } as const;
export const IoctlIn = { fh: 0, flags: 8, cmd: 12, arg: 16, inSize: 24, outSize: 28 } as const;
export const GetxattrIn = { size: 0 } as const;
export const LseekIn = { fh: 0, offset: 8, whence: 16 } as const;
/** fuse_kstatfs. */
export const Kstatfs = {
  blocks: 0,
  bfree: 8,
  bavail: 16,
  files: 24,
  ffree: 32,
  bsize: 40,
  namelen: 44,
  frsize: 48,
} as const;

/** The name of an opcode, for logs and errors. */
export function opName(opcode: number): string {
  for (const [k, v] of Object.entries(Op)) if (v === opcode) return k;
  return `OP_${opcode}`;
}

/** fuse_init_out size the kernel expects for a negotiated minor. */
export function initOutSize(minor: number): number {
  if (minor < 5) return Size.INIT_OUT_COMPAT;
  if (minor < 23) return Size.INIT_OUT_COMPAT_22;
  return Size.INIT_OUT;
}

/** fuse_attr_out size the kernel expects for a negotiated minor. */
export function attrOutSize(minor: number): number {
  return minor < 9 ? Size.ATTR_OUT_COMPAT : Size.ATTR_OUT;
}

/** fuse_write_in size for a negotiated minor (the data follows it). */
export function writeInSize(minor: number): number {
  return minor < 9 ? Size.WRITE_IN_COMPAT : Size.WRITE_IN;
}

/** fuse_statfs_out size for a negotiated minor. */
export function statfsOutSize(minor: number): number {
  return minor < 4 ? Size.STATFS_OUT_COMPAT : Size.KSTATFS;
}
