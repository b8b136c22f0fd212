// Encodes the replies written back to /dev/fuse: out header plus the bodies of the one-file mount's operations.
import { Buffer } from 'node:buffer';
import {
  Attr,
  AttrOut,
  InitOut,
  Kstatfs,
  OpenOut,
  OutHeader,
  Size,
  attrOutSize,
  initOutSize,
  statfsOutSize,
} from './abi.js';

function putU64(buf: Buffer, at: number, v: number): void {
  buf.writeUInt32LE((v % 0x1_0000_0000) >>> 0, at);
  buf.writeUInt32LE(Math.floor(v / 0x1_0000_0000) >>> 0, at + 4);
}

export interface InitOutFields {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

/** The INIT reply body, sized for the negotiated minor. */
export function encodeInitOut(o: InitOutFields): Buffer {
  const b = Buffer.alloc(initOutSize(o.minor));
  b.writeUInt32LE(o.major, InitOut.major);
  b.writeUInt32LE(o.minor, InitOut.minor);
  if (b.length > 8) {
    b.writeUInt32LE(o.maxReadahead, InitOut.maxReadahead);
    b.writeUInt32LE(o.flags >>> 0, InitOut.flags);
    b.writeUInt16LE(o.maxBackground, InitOut.maxBackground);
    b.writeUInt16LE(o.congestionThreshold, InitOut.congestionThreshold);
    b.writeUInt32LE(o.maxWrite, InitOut.maxWrite);
  }
  if (b.length > 24) {
    b.writeUInt32LE(o.timeGran, InitOut.timeGran);
    b.writeUInt16LE(o.maxPages, InitOut.maxPages);
    b.writeUInt32LE(o.flags2 >>> 0, InitOut.flags2);
  }
  return b;
}

/** Writes fuse_out_header at buf[0..16): `error` is 0 or a negative errno. */
export function writeOutHeader(buf: Buffer, len: number, error: number, unique: bigint): void {
  buf.writeUInt32LE(len, OutHeader.len);
  buf.writeInt32LE(error, OutHeader.error);
  buf.writeBigUInt64LE(unique, OutHeader.unique);
}

/** A reply with no body: success (0) or a negative errno. */
export function encodeStatus(unique: bigint, error: number): Buffer {
  const b = Buffer.alloc(Size.OUT_HEADER);
  writeOutHeader(b, Size.OUT_HEADER, error, unique);
  return b;
}

/** A complete reply: header plus `body`. */
export function encodeReply(unique: bigint, body: Buffer): Buffer {
  const b = Buffer.alloc(Size.OUT_HEADER + body.length);
  writeOutHeader(b, b.length, 0, unique);
  body.copy(b, Size.OUT_HEADER);
  return b;
}

export interface AttrFields {
  ino: number;
  size: number;
  blocks: number;
  /** Seconds since the epoch (atime = mtime = ctime). */
  time: number;
  timeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  blksize: number;
}

/** fuse_attr_out with a cache validity of `validSec` seconds, sized for `minor`. */
export function encodeAttrOut(a: AttrFields, validSec: number, minor: number): Buffer {
  const b = Buffer.alloc(Size.ATTR_OUT);
  putU64(b, AttrOut.attrValid, validSec);
  const at = AttrOut.attr;
  putU64(b, at + Attr.ino, a.ino);
  putU64(b, at + Attr.size, a.size);
  putU64(b, at + Attr.blocks, a.blocks);
  for (const f of [Attr.atime, Attr.mtime, Attr.ctime]) putU64(b, at + f, a.time);
  for (const f of [Attr.atimensec, Attr.mtimensec, Attr.ctimensec]) b.writeUInt32LE(a.timeNsec, at + f);
  b.writeUInt32LE(a.mode, at + Attr.mode);
  b.writeUInt32LE(a.nlink, at + Attr.nlink);
  b.writeUInt32LE(a.uid, at + Attr.uid);
  b.writeUInt32LE(a.gid, at + Attr.gid);
  b.writeUInt32LE(a.blksize, at + Attr.blksize);
  return b.subarray(0, attrOutSize(minor));
}

export function encodeOpenOut(fh: bigint, openFlags: number): Buffer {
  const b = Buffer.alloc(Size.OPEN_OUT);
  b.writeBigUInt64LE(fh, OpenOut.fh);
  b.writeUInt32LE(openFlags >>> 0, OpenOut.openFlags);
  return b;
}

export function encodeWriteOut(size: number): Buffer {
  const b = Buffer.alloc(Size.WRITE_OUT);
  b.writeUInt32LE(size, 0);
  return b;
}

export interface StatfsFields {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

export function encodeStatfsOut(s: StatfsFields, minor: number): Buffer {
  const b = Buffer.alloc(Size.KSTATFS);
  putU64(b, Kstatfs.blocks, s.blocks);
  putU64(b, Kstatfs.bfree, s.bfree);
  putU64(b, Kstatfs.bavail, s.bavail);
  putU64(b, Kstatfs.files, s.files);
  putU64(b, Kstatfs.ffree, s.ffree);
  b.writeUInt32LE(s.bsize, Kstatfs.bsize);
  b.writeUInt32LE(s.namelen, Kstatfs.namelen);
  b.writeUInt32LE(s.frsize, Kstatfs.frsize);
  return b.subarray(0, statfsOutSize(minor));
}

/** fuse_getxattr_out: the size a LISTXATTR/GETXATTR with size 0 asks for. */
export function encodeGetxattrOut(size: number): Buffer {
  const b = Buffer.alloc(Size.GETXATTR_OUT);
  b.writeUInt32LE(size, 0);
  return b;
}

export function encodeLseekOut(offset: number): Buffer {
  const b = Buffer.alloc(Size.LSEEK_OUT);
  putU64(b, 0, offset);
  return b;
}
