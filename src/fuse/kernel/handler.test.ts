// The kernel backend's request handler against an in-memory DiskIo: INIT negotiation, data ops, sync rules, refusals, no-reply ops.
import { Buffer } from 'node:buffer';
import { constants as osConstants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { AtrestError } from '../../errors/index.js';
import type { DiskIo } from '../../volume/disk-io.js';
import { Falloc, Fattr, Fopen, FSYNC_FDATASYNC, Init, Op, Size } from './abi.js';
import { decodeInHeader } from './codec.js';
import { Ctl, newControl } from './control.js';
import { RequestHandler } from './handler.js';
import { MAX_WRITE, negotiateInit } from './init.js';

const E = osConstants.errno;

/** fuse_init_in as Linux 6.18 sends it (captured; see codec.test.ts). */
const KERNEL_INIT = { major: 7, minor: 45, maxReadahead: 0x20000, flags: 0x73fffffb, flags2: 0x5fd };

function memDisk(
  size: number,
  readOnly = false,
): DiskIo & { data: Buffer; syncs: boolean[]; locked: boolean } {
  const data = Buffer.alloc(size);
  const d = {
    data,
    syncs: [] as boolean[],
    locked: false,
    size,
    readOnly,
    sectorSize: 4096,
    readInto(p: number, l: number, out: Buffer): number {
      if (d.locked) throw new AtrestError('LOCKED', 'locked');
      const n = Math.max(0, Math.min(l, size - p));
      data.copy(out, 0, p, p + n);
      return n;
    },
    write(p: number, src: Buffer): number {
      if (d.locked) throw new AtrestError('LOCKED', 'locked');
      const n = Math.max(0, Math.min(src.length, size - p));
      src.copy(data, p, 0, n);
      return n;
    },
    sync(datasync: boolean): void {
      d.syncs.push(datasync);
    },
    refresh: () => false,
    close(): void {},
  };
  return d;
}

let unique = 100n;
function request(opcode: number, body: Buffer): Buffer {
  const b = Buffer.alloc(40 + body.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(opcode, 4);
  b.writeBigUInt64LE(unique++, 8);
  b.writeBigUInt64LE(1n, 16);
  body.copy(b, 40);
  return b;
}

function initBody(k = KERNEL_INIT): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(k.major, 0);
  b.writeUInt32LE(k.minor, 4);
  b.writeUInt32LE(k.maxReadahead, 8);
  b.writeUInt32LE(k.flags >>> 0, 12);
  b.writeUInt32LE(k.flags2 >>> 0, 16);
  return b;
}

function setup(opts: { size?: number; readOnly?: boolean; maxMinor?: number } = {}) {
  const disk = memDisk(opts.size ?? 1 << 20, opts.readOnly);
  const ctl = newControl();
  const h = new RequestHandler({ disk, ctl, uid: 0, gid: 0, time: 1_700_000_000, maxMinor: opts.maxMinor });
  const send = (opcode: number, body: Buffer = Buffer.alloc(0)) => {
    const r = request(opcode, body);
    const out = h.handle(r, r.length);
    if (out.reply === null) return null;
    const reply = Buffer.from(out.reply);
    expect(reply.readUInt32LE(0)).toBe(reply.length);
    expect(reply.readBigUInt64LE(8)).toBe(r.readBigUInt64LE(8));
    return {
      error: reply.readInt32LE(4),
      body: reply.subarray(16),
      init: 'init' in out ? out.init : undefined,
    };
  };
  return { disk, ctl, h, send };
}

const u64 = (v: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};
function readIn(offset: number, size: number): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(size, 16);
  return b;
}
function writeIn(offset: number, data: Buffer): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(data.length, 16);
  return Buffer.concat([b, data]);
}
function setattrIn(valid: number, f: { size?: number; mode?: number; uid?: number } = {}): Buffer {
  const b = Buffer.alloc(88);
  b.writeUInt32LE(valid, 0);
  b.writeBigUInt64LE(BigInt(f.size ?? 0), 16);
  b.writeUInt32LE(f.mode ?? 0, 68);
  b.writeUInt32LE(f.uid ?? 0, 76);
  return b;
}
function fallocIn(offset: number, length: number, mode: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeBigUInt64LE(BigInt(length), 16);
  b.writeUInt32LE(mode, 24);
  return b;
}
const openIn = (flags: number): Buffer => Buffer.concat([u64(flags)]);

describe('INIT negotiation', () => {
  it('takes 7.45 with async DIO, 1 MiB requests, no writeback cache', () => {
    const { send, ctl } = setup();
    const r = send(Op.INIT, initBody());
    expect(r?.error).toBe(0);
    expect(r?.init).toBe('ok');
    const b = r!.body;
    expect(b.length).toBe(Size.INIT_OUT);
    expect(b.readUInt32LE(0)).toBe(7);
    expect(b.readUInt32LE(4)).toBe(45);
    const flags = b.readUInt32LE(12);
    expect(flags & Init.ASYNC_DIO).toBe(Init.ASYNC_DIO);
    expect(flags & Init.MAX_PAGES).toBe(Init.MAX_PAGES);
    expect(flags & Init.BIG_WRITES).toBe(Init.BIG_WRITES);
    expect(flags & Init.WRITEBACK_CACHE).toBe(0);
    expect(flags & Init.ABORT_ERROR).toBe(0);
    expect(b.readUInt16LE(16)).toBe(128);
    expect(b.readUInt32LE(20)).toBe(MAX_WRITE);
    expect(b.readUInt16LE(28)).toBe(256);
    expect(Atomics.load(ctl, Ctl.MINOR)).toBe(45);
  });

  it('maxMinor 31 really answers 7.31, and OPEN then leaves out PARALLEL_DIRECT_WRITES (7.38)', () => {
    const { send } = setup({ maxMinor: 31 });
    expect(send(Op.INIT, initBody())!.body.readUInt32LE(4)).toBe(31);
    const o = send(Op.OPEN, openIn(2))!;
    expect(o.body.readUInt32LE(8)).toBe(Fopen.DIRECT_IO);
    const full = setup();
    full.send(Op.INIT, initBody());
    expect(full.send(Op.OPEN, openIn(2))!.body.readUInt32LE(8)).toBe(
      Fopen.DIRECT_IO | Fopen.PARALLEL_DIRECT_WRITES,
    );
  });

  it('refuses a kernel older than 7.31 with a clear reason; answers a newer major with ours only', () => {
    const { send, ctl } = setup();
    const r = send(Op.INIT, initBody({ ...KERNEL_INIT, minor: 30 }))!;
    expect(r.error).toBe(-E.EPROTO);
    expect(r.init).toBe('refused');
    expect(Atomics.load(ctl, Ctl.INIT_STATE)).toBe(2);
    const d = negotiateInit({ ...KERNEL_INIT, minor: 26 });
    expect(d.kind === 'refuse' && d.reason).toMatch(/7\.26.*7\.31/);
    const m = setup().send(Op.INIT, initBody({ ...KERNEL_INIT, major: 8 }))!;
    expect(m.init).toBe('major');
    expect(m.body.length).toBe(8);
    expect(m.body.readUInt32LE(0)).toBe(7);
  });

  it('without MAX_PAGES offered it asks for 128 KiB writes only', () => {
    const d = negotiateInit({ ...KERNEL_INIT, flags: KERNEL_INIT.flags & ~Init.MAX_PAGES });
    expect(d.kind === 'reply' && [d.out.maxWrite, d.out.maxPages, d.out.flags & Init.MAX_PAGES]).toEqual([
      128 * 1024,
      0,
      0,
    ]);
  });
});

describe('requests', () => {
  it('WRITE then READ round trip, short at the end, ENOSPC past it', () => {
    const { send, disk } = setup({ size: 8192 });
    send(Op.INIT, initBody());
    const w = send(Op.WRITE, writeIn(8000, Buffer.alloc(300, 7)))!;
    expect(w.error).toBe(0);
    expect(w.body.readUInt32LE(0)).toBe(192);
    expect(disk.data.subarray(8000).every((x) => x === 7)).toBe(true);
    const r = send(Op.READ, readIn(7990, 4096))!;
    expect(r.body.length).toBe(202);
    expect(r.body.subarray(10).every((x) => x === 7)).toBe(true);
    expect(send(Op.READ, readIn(8192, 4096))!.body.length).toBe(0);
    expect(send(Op.WRITE, writeIn(8192, Buffer.alloc(10)))!.error).toBe(-E.ENOSPC);
  });

  it('FLUSH syncs only after a write; FSYNC always, honouring datasync', () => {
    const { send, disk, ctl } = setup();
    send(Op.INIT, initBody());
    send(Op.FLUSH, Buffer.alloc(24));
    expect(disk.syncs).toEqual([]);
    send(Op.WRITE, writeIn(0, Buffer.alloc(10, 1)));
    send(Op.FLUSH, Buffer.alloc(24));
    send(Op.FLUSH, Buffer.alloc(24));
    expect(disk.syncs).toEqual([true]);
    const fsync = Buffer.alloc(16);
    send(Op.FSYNC, fsync);
    fsync.writeUInt32LE(FSYNC_FDATASYNC, 8);
    send(Op.FSYNC, fsync);
    expect(disk.syncs).toEqual([true, false, true]);
    expect(Atomics.load(ctl, Ctl.SYNCS)).toBe(3);
  });

  it('GETATTR: regular file 0600 of the disk size, inode 1', () => {
    const { send } = setup({ size: 3 << 20 });
    send(Op.INIT, initBody());
    const a = send(Op.GETATTR, Buffer.alloc(16))!.body;
    expect(a.length).toBe(Size.ATTR_OUT);
    expect(Number(a.readBigUInt64LE(16 + 8))).toBe(3 << 20);
    expect(a.readUInt32LE(16 + 60)).toBe(0o100600);
    expect(a.readBigUInt64LE(16)).toBe(1n);
  });

  it('SETATTR: same size and times pass; resize, chmod, chown are refused', () => {
    const { send } = setup({ size: 1 << 20 });
    send(Op.INIT, initBody());
    expect(send(Op.SETATTR, setattrIn(Fattr.SIZE, { size: 1 << 20 }))!.error).toBe(0);
    expect(send(Op.SETATTR, setattrIn(Fattr.SIZE, { size: 0 }))!.error).toBe(-E.EPERM);
    expect(send(Op.SETATTR, setattrIn(Fattr.ATIME_NOW | Fattr.MTIME_NOW))!.error).toBe(0);
    expect(send(Op.SETATTR, setattrIn(Fattr.MODE, { mode: 0o100644 }))!.error).toBe(-E.EPERM);
    expect(send(Op.SETATTR, setattrIn(Fattr.MODE, { mode: 0o100600 }))!.error).toBe(0);
    expect(send(Op.SETATTR, setattrIn(Fattr.UID, { uid: 1000 }))!.error).toBe(-E.EPERM);
  });

  it('read-only: write opens, WRITE and FALLOCATE fail EROFS; reads work', () => {
    const { send } = setup({ readOnly: true });
    send(Op.INIT, initBody());
    expect(send(Op.OPEN, openIn(0))!.error).toBe(0);
    expect(send(Op.OPEN, openIn(2))!.error).toBe(-E.EROFS);
    expect(send(Op.OPEN, openIn(1))!.error).toBe(-E.EROFS);
    expect(send(Op.WRITE, writeIn(0, Buffer.alloc(1)))!.error).toBe(-E.EROFS);
    expect(send(Op.READ, readIn(0, 10))!.body.length).toBe(10);
  });

  it('FALLOCATE: inside the disk a no-op, growing EFBIG, holes and zero ranges EOPNOTSUPP', () => {
    const { send } = setup({ size: 1 << 20 });
    send(Op.INIT, initBody());
    expect(send(Op.FALLOCATE, fallocIn(0, 4096, 0))!.error).toBe(0);
    expect(send(Op.FALLOCATE, fallocIn(0, 2 << 20, Falloc.KEEP_SIZE))!.error).toBe(0);
    expect(send(Op.FALLOCATE, fallocIn(0, 2 << 20, 0))!.error).toBe(-E.EFBIG);
    expect(send(Op.FALLOCATE, fallocIn(0, 4096, Falloc.PUNCH_HOLE | Falloc.KEEP_SIZE))!.error).toBe(
      -E.EOPNOTSUPP,
    );
    expect(send(Op.FALLOCATE, fallocIn(0, 4096, Falloc.ZERO_RANGE))!.error).toBe(-E.EOPNOTSUPP);
  });

  it('a locked volume answers EIO (LOCKED), never throws out of the handler', () => {
    const { send, disk } = setup();
    send(Op.INIT, initBody());
    disk.locked = true;
    expect(send(Op.READ, readIn(0, 4096))!.error).toBe(-E.EIO);
    expect(send(Op.WRITE, writeIn(0, Buffer.alloc(4)))!.error).toBe(-E.EIO);
  });

  it('INTERRUPT, FORGET and BATCH_FORGET get no reply; the rest of the protocol gets ENOSYS/ENOTTY/ENOENT', () => {
    const { send, ctl } = setup();
    send(Op.INIT, initBody());
    expect(send(Op.INTERRUPT, u64(5))).toBeNull();
    expect(Atomics.load(ctl, Ctl.INTERRUPTS)).toBe(1);
    expect(send(Op.FORGET, u64(1))).toBeNull();
    expect(send(Op.BATCH_FORGET, Buffer.alloc(8))).toBeNull();
    expect(send(Op.GETXATTR, Buffer.concat([Buffer.alloc(8), Buffer.from('user.x\0')]))!.error).toBe(
      -E.ENOSYS,
    );
    expect(send(Op.LISTXATTR, Buffer.alloc(8))!.error).toBe(-E.ENOSYS);
    expect(send(Op.STATX, Buffer.alloc(24))!.error).toBe(-E.ENOSYS);
    expect(send(Op.LSEEK, Buffer.alloc(24))!.error).toBe(-E.ENOSYS);
    expect(send(Op.MKDIR, Buffer.alloc(8))!.error).toBe(-E.ENOSYS);
    expect(send(Op.IOCTL, Buffer.alloc(32))!.error).toBe(-E.ENOTTY);
    expect(send(Op.LOOKUP, Buffer.from('x\0'))!.error).toBe(-E.ENOENT);
    expect(send(Op.STATFS)!.body.length).toBe(80);
    expect(send(Op.DESTROY)!.error).toBe(0);
  });

  it('a malformed request gets EIO and is counted, with its unique echoed', () => {
    const { h, ctl } = setup();
    const r = request(Op.READ, Buffer.alloc(8));
    const out = h.handle(r, r.length);
    expect(out.reply?.readInt32LE(4)).toBe(-E.EIO);
    expect(out.reply?.readBigUInt64LE(8)).toBe(decodeInHeader(r, r.length).unique);
    expect(Atomics.load(ctl, Ctl.PROTOCOL_ERRORS)).toBe(1);
  });
});
