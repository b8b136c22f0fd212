// Serves one decoded FUSE request of the one-file mount against a DiskIo, synchronously, and builds its reply.
import { Buffer } from 'node:buffer';
import { constants as fsConstants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { errnoOf } from '../../errors/index.js';
import type { DiskIo } from '../../volume/disk-io.js';
import {
  FOPEN_PARALLEL_DIRECT_WRITES_MINOR,
  FSYNC_FDATASYNC,
  Falloc,
  Fattr,
  Fopen,
  OP_SLOTS,
  Op,
  Size,
} from './abi.js';
import {
  FuseProtocolError,
  bodyLength,
  decodeFallocateIn,
  decodeFsyncIn,
  decodeInHeader,
  decodeInitIn,
  decodeOpenIn,
  decodeReadIn,
  decodeSetattrIn,
  decodeWriteIn,
  encodeAttrOut,
  encodeInitOut,
  encodeOpenOut,
  encodeReply,
  encodeStatfsOut,
  encodeStatus,
  encodeWriteOut,
  writeOutHeader,
  type AttrFields,
} from './codec.js';
import { Ctl, atomicMax } from './control.js';
import { MAX_WRITE, negotiateInit } from './init.js';

const E = osConstants.errno;
/** Linux O_ACCMODE (node:fs does not export it). */
const O_ACCMODE = 3;
/** Attributes never change while mounted: let the kernel keep them for an hour. */
export const ATTR_VALID_SEC = 3600;

export interface HandlerOptions {
  disk: DiskIo;
  ctl: Int32Array;
  /** Cap on the negotiated minor. */
  maxMinor?: number;
  uid: number;
  gid: number;
  /** Mount time, seconds since the epoch (atime = mtime = ctime). */
  time: number;
}

/** `-errno` for a failure: AtrestError codes through the error table (LOCKED -> EIO), system errors as is. */
export function negErrno(err: unknown): number {
  if (err instanceof FuseProtocolError) return -E.EIO;
  const n = E[errnoOf(err) as keyof typeof E];
  return -(typeof n === 'number' ? n : E.EIO);
}

/** What the worker does with a request once served. */
export type Outcome =
  | { reply: Buffer }
  /** FORGET, BATCH_FORGET, INTERRUPT: the kernel expects no reply. */
  | { reply: null }
  | { reply: Buffer; init: 'ok' | 'refused' | 'major'; reason?: string };

/**
 * One serving thread's request handler. Holds the reply buffer for READ (header + up to 1 MiB) so a
 * read is decrypted straight into the bytes written to the device.
 */
export class RequestHandler {
  readonly #o: HandlerOptions;
  readonly #readReply = Buffer.allocUnsafeSlow(Size.OUT_HEADER + MAX_WRITE);
  readonly #attr: AttrFields;

  constructor(o: HandlerOptions) {
    this.#o = o;
    this.#attr = {
      ino: 1,
      size: o.disk.size,
      blocks: Math.ceil(o.disk.size / 512),
      time: o.time,
      timeNsec: 0,
      mode: fsConstants.S_IFREG | 0o600,
      nlink: 1,
      uid: o.uid,
      gid: o.gid,
      blksize: 4096,
    };
  }

  /** Serves the request in buf[0..n) and returns what to write back. Never throws. */
  handle(buf: Buffer, n: number): Outcome {
    let unique = 0n;
    try {
      const h = decodeInHeader(buf, n);
      unique = h.unique;
      const ctl = this.#o.ctl;
      Atomics.add(ctl, Ctl.OPS + (h.opcode < OP_SLOTS ? h.opcode : 0), 1);
      return this.#serve(h.opcode, unique, buf, bodyLength(h));
    } catch (err) {
      if (err instanceof FuseProtocolError) Atomics.add(this.#o.ctl, Ctl.PROTOCOL_ERRORS, 1);
      return { reply: encodeStatus(unique, negErrno(err)) };
    }
  }

  #minor(): number {
    return Atomics.load(this.#o.ctl, Ctl.MINOR);
  }

  #serve(opcode: number, unique: bigint, buf: Buffer, bodyLen: number): Outcome {
    const { disk, ctl } = this.#o;
    const status = (errno: number): Outcome => ({ reply: encodeStatus(unique, errno === 0 ? 0 : -errno) });
    switch (opcode) {
      case Op.INIT:
        return this.#init(unique, buf, bodyLen);
      case Op.READ: {
        const r = decodeReadIn(buf, bodyLen);
        atomicMax(ctl, Ctl.MAX_READ, r.size);
        const out = this.#readReply;
        const want = Math.min(r.size, out.length - Size.OUT_HEADER);
        const got = disk.readInto(r.offset, want, out.subarray(Size.OUT_HEADER, Size.OUT_HEADER + want));
        writeOutHeader(out, Size.OUT_HEADER + got, 0, unique);
        return { reply: out.subarray(0, Size.OUT_HEADER + got) };
      }
      case Op.WRITE: {
        const w = decodeWriteIn(buf, bodyLen, this.#minor());
        atomicMax(ctl, Ctl.MAX_WRITE, w.size);
        if (disk.readOnly) return status(E.EROFS);
        const done = disk.write(w.offset, buf.subarray(w.dataOffset, w.dataOffset + w.size));
        if (done === 0 && w.size > 0) return status(E.ENOSPC);
        // after the pwrite: a FLUSH that clears DIRTY later syncs this write
        Atomics.store(ctl, Ctl.DIRTY, 1);
        return { reply: encodeReply(unique, encodeWriteOut(done)) };
      }
      case Op.FLUSH:
        // close(2) of a descriptor: make what was written durable, but only if anything was
        if (Atomics.exchange(ctl, Ctl.DIRTY, 0) !== 0) {
          Atomics.add(ctl, Ctl.SYNCS, 1);
          disk.sync(true);
        }
        return status(0);
      case Op.FSYNC: {
        const f = decodeFsyncIn(buf, bodyLen);
        Atomics.store(ctl, Ctl.DIRTY, 0);
        Atomics.add(ctl, Ctl.SYNCS, 1);
        disk.sync((f.fsyncFlags & FSYNC_FDATASYNC) !== 0);
        return status(0);
      }
      case Op.GETATTR:
        return { reply: encodeReply(unique, encodeAttrOut(this.#attr, ATTR_VALID_SEC, this.#minor())) };
      case Op.SETATTR:
        return this.#setattr(unique, buf, bodyLen);
      case Op.OPEN: {
        const { flags } = decodeOpenIn(buf, bodyLen);
        if (disk.readOnly && (flags & O_ACCMODE) !== fsConstants.O_RDONLY) return status(E.EROFS);
        let open = Fopen.DIRECT_IO;
        if (this.#minor() >= FOPEN_PARALLEL_DIRECT_WRITES_MINOR) open |= Fopen.PARALLEL_DIRECT_WRITES;
        const fh = BigInt(Atomics.add(ctl, Ctl.NEXT_FH, 1) >>> 0) + 1n;
        return { reply: encodeReply(unique, encodeOpenOut(fh, open)) };
      }
      case Op.RELEASE:
      case Op.ACCESS:
        return status(0);
      case Op.STATFS: {
        const blocks = Math.ceil(disk.size / 4096);
        const st = {
          blocks,
          bfree: 0,
          bavail: 0,
          files: 1,
          ffree: 0,
          bsize: 4096,
          namelen: 255,
          frsize: 4096,
        };
        return { reply: encodeReply(unique, encodeStatfsOut(st, this.#minor())) };
      }
      case Op.FALLOCATE: {
        const f = decodeFallocateIn(buf, bodyLen);
        if (disk.readOnly) return status(E.EROFS);
        // every byte of the disk exists already: allocating inside it is a no-op; it cannot grow,
        // punch holes or zero ranges
        if (f.mode === Falloc.KEEP_SIZE) return status(0);
        if (f.mode !== 0) return status(E.EOPNOTSUPP);
        return status(f.offset + f.length <= disk.size ? 0 : E.EFBIG);
      }
      case Op.IOCTL:
        return status(E.ENOTTY);
      case Op.INTERRUPT:
        // requests are served synchronously: the interrupted one gets its (late) reply when done
        Atomics.add(ctl, Ctl.INTERRUPTS, 1);
        return { reply: null };
      case Op.FORGET:
      case Op.BATCH_FORGET:
        return { reply: null };
      case Op.DESTROY:
        Atomics.store(ctl, Ctl.DESTROYED, 1);
        return status(0);
      case Op.LOOKUP:
        // the root is the file itself: it has no names under it
        return status(E.ENOENT);
      default:
        // xattrs, LSEEK, STATX, locks, directory ops...: ENOSYS makes the kernel stop asking
        // (xattr ops then fail with EOPNOTSUPP, LSEEK and STATX fall back to generic code)
        return status(E.ENOSYS);
    }
  }

  #init(unique: bigint, buf: Buffer, bodyLen: number): Outcome {
    const { ctl, maxMinor } = this.#o;
    const k = decodeInitIn(buf, bodyLen);
    Atomics.store(ctl, Ctl.KERNEL_MINOR, k.minor);
    Atomics.store(ctl, Ctl.KERNEL_FLAGS, k.flags | 0);
    Atomics.store(ctl, Ctl.KERNEL_FLAGS2, k.flags2 | 0);
    const d = negotiateInit(k, maxMinor);
    if (d.kind === 'refuse') {
      Atomics.store(ctl, Ctl.INIT_STATE, 2);
      return { reply: encodeStatus(unique, -E.EPROTO), init: 'refused', reason: d.reason };
    }
    if (d.kind === 'major')
      return { reply: encodeReply(unique, encodeInitOut(d.out).subarray(0, 8)), init: 'major' };
    Atomics.store(ctl, Ctl.MINOR, d.out.minor);
    Atomics.store(ctl, Ctl.INIT_FLAGS, d.out.flags | 0);
    Atomics.store(ctl, Ctl.INIT_STATE, 1);
    return { reply: encodeReply(unique, encodeInitOut(d.out)), init: 'ok' };
  }

  #setattr(unique: bigint, buf: Buffer, bodyLen: number): Outcome {
    const s = decodeSetattrIn(buf, bodyLen);
    const a = this.#attr;
    const deny = encodeStatus(unique, -E.EPERM);
    // the size is the volume's: truncating to it is a no-op, anything else is refused
    if ((s.valid & Fattr.SIZE) !== 0 && s.size !== a.size) return { reply: deny };
    // the file stays 0600 and owned by the server's user: only "changes" to the same values pass
    if ((s.valid & Fattr.MODE) !== 0 && (s.mode & 0o7777) !== (a.mode & 0o7777)) return { reply: deny };
    if ((s.valid & Fattr.UID) !== 0 && s.uid !== a.uid) return { reply: deny };
    if ((s.valid & Fattr.GID) !== 0 && s.gid !== a.gid) return { reply: deny };
    if ((s.valid & Fattr.SIZE) !== 0 && this.#o.disk.readOnly)
      return { reply: encodeStatus(unique, -E.EROFS) };
    // times (touch) are accepted and not kept: the attributes stay those of the mount
    return { reply: encodeReply(unique, encodeAttrOut(a, ATTR_VALID_SEC, this.#minor())) };
  }
}
