// Decodes FUSE requests read from /dev/fuse (layouts from abi.ts); re-exports the reply encoders.
import { Buffer } from 'node:buffer';
import {
  AccessIn,
  BatchForgetIn,
  FallocateIn,
  FlushIn,
  ForgetIn,
  FsyncIn,
  GetattrIn,
  GetxattrIn,
  Init,
  InitIn,
  InHeader,
  InterruptIn,
  IoctlIn,
  LseekIn,
  OpenIn,
  ReadIn,
  ReleaseIn,
  SetattrIn,
  Size,
  WriteIn,
  writeInSize,
} from './abi.js';

/** A request the kernel sent that does not parse (too short, length fields disagree). */
export class FuseProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuseProtocolError';
  }
}

export interface InHeaderFields {
  /** Total request length including this header. */
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
  /** Length of request extensions, in 8-byte units (7.38+). */
  totalExtlen: number;
}

/** An unsigned 64-bit field as a Number (file offsets and sizes: exact below 2^53). */
function u64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * 0x1_0000_0000;
}

function need(n: number, have: number, what: string): void {
  if (have < n) throw new FuseProtocolError(`${what}: ${have} bytes, expected at least ${n}`);
}

/** Decodes fuse_in_header from the first `n` bytes read from the device. */
export function decodeInHeader(buf: Buffer, n: number): InHeaderFields {
  need(Size.IN_HEADER, n, 'request header');
  const len = buf.readUInt32LE(InHeader.len);
  if (len !== n) throw new FuseProtocolError(`request length ${len} but ${n} bytes were read`);
  return {
    len,
    opcode: buf.readUInt32LE(InHeader.opcode),
    unique: buf.readBigUInt64LE(InHeader.unique),
    nodeid: buf.readBigUInt64LE(InHeader.nodeid),
    uid: buf.readUInt32LE(InHeader.uid),
    gid: buf.readUInt32LE(InHeader.gid),
    pid: buf.readUInt32LE(InHeader.pid),
    totalExtlen: buf.readUInt16LE(InHeader.totalExtlen),
  };
}

/** Bytes of the request body (after the header), extensions excluded. */
export function bodyLength(h: InHeaderFields): number {
  return h.len - Size.IN_HEADER - h.totalExtlen * 8;
}

const B = Size.IN_HEADER;

export interface InitInFields {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  /** Only when flags has INIT_EXT (7.36+); 0 otherwise. */
  flags2: number;
}

export function decodeInitIn(buf: Buffer, bodyLen: number): InitInFields {
  need(8, bodyLen, 'INIT');
  const major = buf.readUInt32LE(B + InitIn.major);
  const minor = buf.readUInt32LE(B + InitIn.minor);
  // a kernel of another major sends only major/minor; everything else is read only when present
  const maxReadahead = bodyLen >= 12 ? buf.readUInt32LE(B + InitIn.maxReadahead) : 0;
  const flags = bodyLen >= 16 ? buf.readUInt32LE(B + InitIn.flags) : 0;
  const flags2 = (flags & Init.INIT_EXT) !== 0 && bodyLen >= 20 ? buf.readUInt32LE(B + InitIn.flags2) : 0;
  return { major, minor, maxReadahead, flags: flags >>> 0, flags2: flags2 >>> 0 };
}

export interface ReadInFields {
  fh: bigint;
  offset: number;
  size: number;
  flags: number;
}

export function decodeReadIn(buf: Buffer, bodyLen: number): ReadInFields {
  need(Size.READ_IN, bodyLen, 'READ');
  return {
    fh: buf.readBigUInt64LE(B + ReadIn.fh),
    offset: u64(buf, B + ReadIn.offset),
    size: buf.readUInt32LE(B + ReadIn.size),
    flags: buf.readUInt32LE(B + ReadIn.flags),
  };
}

export interface WriteInFields {
  fh: bigint;
  offset: number;
  size: number;
  writeFlags: number;
  /** Where the data starts in the request buffer. */
  dataOffset: number;
}

export function decodeWriteIn(buf: Buffer, bodyLen: number, minor: number): WriteInFields {
  const fixed = writeInSize(minor);
  need(fixed, bodyLen, 'WRITE');
  const size = buf.readUInt32LE(B + WriteIn.size);
  if (bodyLen < fixed + size) {
    throw new FuseProtocolError(`WRITE of ${size} bytes carries only ${bodyLen - fixed}`);
  }
  return {
    fh: buf.readBigUInt64LE(B + WriteIn.fh),
    offset: u64(buf, B + WriteIn.offset),
    size,
    writeFlags: buf.readUInt32LE(B + WriteIn.writeFlags),
    dataOffset: B + fixed,
  };
}

export interface GetattrInFields {
  flags: number;
  fh: bigint;
}

/** GETATTR carries fuse_getattr_in since 7.9 (an empty body before). */
export function decodeGetattrIn(buf: Buffer, bodyLen: number): GetattrInFields {
  if (bodyLen < Size.GETATTR_IN) return { flags: 0, fh: 0n };
  return { flags: buf.readUInt32LE(B + GetattrIn.flags), fh: buf.readBigUInt64LE(B + GetattrIn.fh) };
}

export interface SetattrInFields {
  valid: number;
  fh: bigint;
  size: number;
  mode: number;
  uid: number;
  gid: number;
}

export function decodeSetattrIn(buf: Buffer, bodyLen: number): SetattrInFields {
  need(Size.SETATTR_IN, bodyLen, 'SETATTR');
  return {
    valid: buf.readUInt32LE(B + SetattrIn.valid),
    fh: buf.readBigUInt64LE(B + SetattrIn.fh),
    size: u64(buf, B + SetattrIn.size),
    mode: buf.readUInt32LE(B + SetattrIn.mode),
    uid: buf.readUInt32LE(B + SetattrIn.uid),
    gid: buf.readUInt32LE(B + SetattrIn.gid),
  };
}

export function decodeOpenIn(buf: Buffer, bodyLen: number): { flags: number } {
  need(Size.OPEN_IN, bodyLen, 'OPEN');
  return { flags: buf.readUInt32LE(B + OpenIn.flags) };
}

export function decodeReleaseIn(
  buf: Buffer,
  bodyLen: number,
): { fh: bigint; flags: number; releaseFlags: number } {
  need(Size.RELEASE_IN, bodyLen, 'RELEASE');
  return {
    fh: buf.readBigUInt64LE(B + ReleaseIn.fh),
    flags: buf.readUInt32LE(B + ReleaseIn.flags),
    releaseFlags: buf.readUInt32LE(B + ReleaseIn.releaseFlags),
  };
}

export function decodeFlushIn(buf: Buffer, bodyLen: number): { fh: bigint; lockOwner: bigint } {
  need(Size.FLUSH_IN, bodyLen, 'FLUSH');
  return { fh: buf.readBigUInt64LE(B + FlushIn.fh), lockOwner: buf.readBigUInt64LE(B + FlushIn.lockOwner) };
}

export function decodeFsyncIn(buf: Buffer, bodyLen: number): { fh: bigint; fsyncFlags: number } {
  need(Size.FSYNC_IN, bodyLen, 'FSYNC');
  return { fh: buf.readBigUInt64LE(B + FsyncIn.fh), fsyncFlags: buf.readUInt32LE(B + FsyncIn.fsyncFlags) };
}

export function decodeAccessIn(buf: Buffer, bodyLen: number): { mask: number } {
  need(Size.ACCESS_IN, bodyLen, 'ACCESS');
  return { mask: buf.readUInt32LE(B + AccessIn.mask) };
}

/** The unique id of the request an INTERRUPT is about. */
export function decodeInterruptIn(buf: Buffer, bodyLen: number): { unique: bigint } {
  need(Size.INTERRUPT_IN, bodyLen, 'INTERRUPT');
  return { unique: buf.readBigUInt64LE(B + InterruptIn.unique) };
}

export function decodeForgetIn(buf: Buffer, bodyLen: number): { nlookup: bigint } {
  need(Size.FORGET_IN, bodyLen, 'FORGET');
  return { nlookup: buf.readBigUInt64LE(B + ForgetIn.nlookup) };
}

export function decodeBatchForgetIn(
  buf: Buffer,
  bodyLen: number,
): { count: number; items: { nodeid: bigint; nlookup: bigint }[] } {
  need(Size.BATCH_FORGET_IN, bodyLen, 'BATCH_FORGET');
  const count = buf.readUInt32LE(B + BatchForgetIn.count);
  need(Size.BATCH_FORGET_IN + count * Size.FORGET_ONE, bodyLen, 'BATCH_FORGET entries');
  const items = [];
  for (let i = 0; i < count; i++) {
    const at = B + Size.BATCH_FORGET_IN + i * Size.FORGET_ONE;
    items.push({ nodeid: buf.readBigUInt64LE(at), nlookup: buf.readBigUInt64LE(at + 8) });
  }
  return { count, items };
}

export interface FallocateInFields {
  fh: bigint;
  offset: number;
  length: number;
  mode: number;
}

export function decodeFallocateIn(buf: Buffer, bodyLen: number): FallocateInFields {
  need(Size.FALLOCATE_IN, bodyLen, 'FALLOCATE');
  return {
    fh: buf.readBigUInt64LE(B + FallocateIn.fh),
    offset: u64(buf, B + FallocateIn.offset),
    length: u64(buf, B + FallocateIn.length),
    mode: buf.readUInt32LE(B + FallocateIn.mode),
  };
}

export function decodeIoctlIn(
  buf: Buffer,
  bodyLen: number,
): { fh: bigint; flags: number; cmd: number; inSize: number; outSize: number } {
  need(Size.IOCTL_IN, bodyLen, 'IOCTL');
  return {
    fh: buf.readBigUInt64LE(B + IoctlIn.fh),
    flags: buf.readUInt32LE(B + IoctlIn.flags),
    cmd: buf.readUInt32LE(B + IoctlIn.cmd),
    inSize: buf.readUInt32LE(B + IoctlIn.inSize),
    outSize: buf.readUInt32LE(B + IoctlIn.outSize),
  };
}

/** GETXATTR: fuse_getxattr_in then the NUL-terminated name. LISTXATTR: fuse_getxattr_in only. */
export function decodeGetxattrIn(buf: Buffer, bodyLen: number): { size: number; name: string } {
  need(Size.GETXATTR_IN, bodyLen, 'GETXATTR');
  const size = buf.readUInt32LE(B + GetxattrIn.size);
  const start = B + Size.GETXATTR_IN;
  const end = buf.indexOf(0, start);
  const stop = end < 0 || end > B + bodyLen ? B + bodyLen : end;
  return { size, name: buf.toString('utf8', start, stop) };
}

export function decodeLseekIn(buf: Buffer, bodyLen: number): { fh: bigint; offset: number; whence: number } {
  need(Size.LSEEK_IN, bodyLen, 'LSEEK');
  return {
    fh: buf.readBigUInt64LE(B + LseekIn.fh),
    offset: u64(buf, B + LseekIn.offset),
    whence: buf.readUInt32LE(B + LseekIn.whence),
  };
}

export * from './reply.js';
