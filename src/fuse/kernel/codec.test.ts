// FUSE codec: request bytes captured from Linux 6.18 (FUSE 7.45) decode as expected; replies have the kernel's sizes.
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { FSYNC_FDATASYNC, Falloc, Fattr, Init, Op, Size } from './abi.js';
import {
  FuseProtocolError,
  bodyLength,
  decodeFallocateIn,
  decodeFlushIn,
  decodeFsyncIn,
  decodeGetattrIn,
  decodeGetxattrIn,
  decodeInHeader,
  decodeInitIn,
  decodeOpenIn,
  decodeReadIn,
  decodeReleaseIn,
  decodeSetattrIn,
  decodeWriteIn,
  encodeAttrOut,
  encodeInitOut,
  encodeOpenOut,
  encodeReply,
  encodeStatfsOut,
  encodeStatus,
} from './codec.js';

/**
 * Requests as read from /dev/fuse on Linux 6.18 (a scratch server: INIT, then stat, a 5-byte dd at
 * 4096, a 4 KiB read, `truncate -s 1M`, `fallocate -l 4096`, `sync FILE`).
 */
const CAPTURED = {
  INIT:
    '680000001a0000000200000000000000000000000000000000000000000000000000000000000000070000002d000000' +
    '00000200fbffff73fd050000000000000000000000000000000000000000000000000000000000000000000000000000' +
    '0000000000000000',
  GETATTR:
    '3800000003000000060000000000000001000000000000000000000000000000d92a0000000000000000000000000000' +
    '0000000000000000',
  OPEN: '300000000e000000080000000000000001000000000000000000000000000000db2a0000000000000280000000000000',
  FLUSH:
    '40000000190000000a0000000000000001000000000000000000000000000000db2a0000000000000100000000000000' +
    '0000000000000000cfc66ee96fd830a1',
  WRITE:
    '55000000100000000c0000000000000001000000000000000000000000000000db2a0000000000000100000000000000' +
    '00100000000000000500000002000000cfc66ee96fd830a1028000000000000068656c6c6f',
  RELEASE:
    '400000001200000010000000000000000100000000000000000000000000000000000000000000000100000000000000' +
    '02800000000000000000000000000000',
  READ:
    '500000000f000000180000000000000001000000000000000000000000000000e22a0000000000000200000000000000' +
    '00100000000000000010000002000000cfc66ee96fd830a10080000000000000',
  GETXATTR:
    '4400000016000000200000000000000001000000000000000000000000000000e32a0000000000000000000000000000' +
    '73656375726974792e6361706162696c69747900',
  SETATTR:
    '8000000004000000220000000000000001000000000000000000000000000000e32a0000000000004802000000000000' +
    '030000000000000000001000000000001ae2f6650e44be97000000000000000000000000000000000000000000000000' +
    '0000000000000000000000000000000000000000000000000000000000000000',
  FALLOCATE:
    '480000002b000000340000000000000001000000000000000000000000000000e52a0000000000000500000000000000' +
    '000000000000000000100000000000000000000000000000',
  FSYNC:
    '3800000014000000360000000000000001000000000000000000000000000000e52a0000000000000500000000000000' +
    '0000000000000000',
} as const;

function req(name: keyof typeof CAPTURED): { buf: Buffer; n: number; body: number } {
  const buf = Buffer.from(CAPTURED[name], 'hex');
  const h = decodeInHeader(buf, buf.length);
  return { buf, n: buf.length, body: bodyLength(h) };
}

describe('decoding captured requests', () => {
  it('INIT: 7.45 with INIT_EXT, flags2, ASYNC_DIO and MAX_PAGES offered', () => {
    const { buf, body } = req('INIT');
    const h = decodeInHeader(buf, buf.length);
    expect(h).toMatchObject({ len: 104, opcode: Op.INIT, unique: 2n, nodeid: 0n, totalExtlen: 0 });
    expect(body).toBe(Size.INIT_IN);
    const i = decodeInitIn(buf, body);
    expect(i).toMatchObject({ major: 7, minor: 45, maxReadahead: 0x20000 });
    for (const f of [Init.ASYNC_DIO, Init.MAX_PAGES, Init.BIG_WRITES, Init.INIT_EXT, Init.PARALLEL_DIROPS]) {
      expect(i.flags & f).toBe(f);
    }
    expect(i.flags2).toBe(0x5fd);
  });

  it('INIT without INIT_EXT reads no flags2, and a major-only INIT still parses', () => {
    const { buf, body } = req('INIT');
    const b = Buffer.from(buf);
    b.writeUInt32LE((b.readUInt32LE(52) & ~Init.INIT_EXT) >>> 0, 52);
    expect(decodeInitIn(b, body).flags2).toBe(0);
    const short = Buffer.concat([b.subarray(0, 48)]);
    short.writeUInt32LE(48, 0);
    expect(decodeInitIn(short, 8)).toMatchObject({ major: 7, minor: 45, flags: 0, flags2: 0 });
  });

  it('GETATTR, OPEN, FLUSH, RELEASE, FSYNC', () => {
    let r = req('GETATTR');
    expect(decodeInHeader(r.buf, r.n)).toMatchObject({ opcode: Op.GETATTR, nodeid: 1n, uid: 0, pid: 0x2ad9 });
    expect(decodeGetattrIn(r.buf, r.body)).toEqual({ flags: 0, fh: 0n });
    r = req('OPEN');
    expect(decodeOpenIn(r.buf, r.body).flags).toBe(0x8002); // O_RDWR | O_LARGEFILE
    r = req('FLUSH');
    expect(decodeFlushIn(r.buf, r.body)).toEqual({ fh: 1n, lockOwner: 0xa130d86fe96ec6cfn });
    r = req('RELEASE');
    expect(decodeReleaseIn(r.buf, r.body)).toEqual({ fh: 1n, flags: 0x8002, releaseFlags: 0 });
    r = req('FSYNC');
    const f = decodeFsyncIn(r.buf, r.body);
    expect(f.fh).toBe(5n);
    expect(f.fsyncFlags & FSYNC_FDATASYNC).toBe(0);
  });

  it('WRITE: offset, size and the data right after fuse_write_in', () => {
    const r = req('WRITE');
    const w = decodeWriteIn(r.buf, r.body, 45);
    expect(w).toMatchObject({ fh: 1n, offset: 4096, size: 5, dataOffset: 80 });
    expect(r.buf.toString('utf8', w.dataOffset, w.dataOffset + w.size)).toBe('hello');
    // a WRITE claiming more data than it carries is a protocol error, not a short write
    const bad = Buffer.from(r.buf);
    bad.writeUInt32LE(6, 56);
    expect(() => decodeWriteIn(bad, r.body, 45)).toThrow(FuseProtocolError);
  });

  it('READ, GETXATTR, SETATTR (truncate -s 1M), FALLOCATE (fallocate -l 4096)', () => {
    let r = req('READ');
    expect(decodeReadIn(r.buf, r.body)).toMatchObject({ fh: 2n, offset: 4096, size: 4096 });
    r = req('GETXATTR');
    expect(decodeGetxattrIn(r.buf, r.body)).toEqual({ size: 0, name: 'security.capability' });
    r = req('SETATTR');
    const s = decodeSetattrIn(r.buf, r.body);
    expect(s.valid).toBe(Fattr.SIZE | Fattr.FH | Fattr.LOCKOWNER);
    expect(s.size).toBe(1024 * 1024);
    expect(s.fh).toBe(3n);
    r = req('FALLOCATE');
    expect(decodeFallocateIn(r.buf, r.body)).toEqual({ fh: 5n, offset: 0, length: 4096, mode: 0 });
    expect(Falloc.KEEP_SIZE).toBe(1);
  });

  it('rejects a length that disagrees with the bytes read, and short bodies', () => {
    const r = req('READ');
    expect(() => decodeInHeader(r.buf, r.n - 1)).toThrow(FuseProtocolError);
    expect(() => decodeInHeader(r.buf, 20)).toThrow(FuseProtocolError);
    expect(() => decodeReadIn(r.buf, 39)).toThrow(FuseProtocolError);
    expect(() => decodeSetattrIn(r.buf, 40)).toThrow(FuseProtocolError);
  });

  it('offsets above 4 GiB decode exactly', () => {
    const r = req('READ');
    const b = Buffer.from(r.buf);
    b.writeBigUInt64LE(0x1_2345_6000n, 48);
    expect(decodeReadIn(b, r.body).offset).toBe(0x1_2345_6000);
  });
});

describe('encoding replies', () => {
  it('out header: length, negative errno, unique', () => {
    const b = encodeStatus(0x1234_5678_9abcn, -38);
    expect(b.length).toBe(16);
    expect(b.readUInt32LE(0)).toBe(16);
    expect(b.readInt32LE(4)).toBe(-38);
    expect(b.readBigUInt64LE(8)).toBe(0x1234_5678_9abcn);
  });

  it('init_out is 64 bytes from 7.23 on, 24 for 7.5..7.22, 8 before', () => {
    const base = {
      major: 7,
      minor: 45,
      maxReadahead: 0x20000,
      flags: Init.ASYNC_DIO | Init.MAX_PAGES,
      flags2: 0,
      maxBackground: 128,
      congestionThreshold: 96,
      maxWrite: 1 << 20,
      timeGran: 1,
      maxPages: 256,
    };
    const b = encodeInitOut(base);
    expect(b.length).toBe(64);
    expect(b.readUInt32LE(4)).toBe(45);
    expect(b.readUInt32LE(12)).toBe(Init.ASYNC_DIO | Init.MAX_PAGES);
    expect(b.readUInt16LE(16)).toBe(128);
    expect(b.readUInt16LE(18)).toBe(96);
    expect(b.readUInt32LE(20)).toBe(1 << 20);
    expect(b.readUInt32LE(24)).toBe(1);
    expect(b.readUInt16LE(28)).toBe(256);
    expect(encodeInitOut({ ...base, minor: 22 }).length).toBe(24);
    expect(encodeInitOut({ ...base, minor: 4 }).length).toBe(8);
  });

  it('attr_out: 104 bytes (96 before 7.9), fields where fuse.h puts them', () => {
    const a = {
      ino: 1,
      size: 5 * 2 ** 32 + 4096,
      blocks: 42,
      time: 1_700_000_000,
      timeNsec: 7,
      mode: 0o100600,
      nlink: 1,
      uid: 0,
      gid: 0,
      blksize: 4096,
    };
    const b = encodeAttrOut(a, 3600, 45);
    expect(b.length).toBe(104);
    expect(b.readBigUInt64LE(0)).toBe(3600n);
    expect(b.readBigUInt64LE(16)).toBe(1n);
    expect(Number(b.readBigUInt64LE(24))).toBe(a.size);
    expect(b.readBigUInt64LE(32)).toBe(42n);
    expect(b.readBigUInt64LE(48)).toBe(1_700_000_000n);
    expect(b.readUInt32LE(16 + 60)).toBe(0o100600);
    expect(b.readUInt32LE(16 + 64)).toBe(1);
    expect(b.readUInt32LE(16 + 80)).toBe(4096);
    expect(encodeAttrOut(a, 3600, 8).length).toBe(96);
  });

  it('open_out, statfs_out, and a full reply', () => {
    const o = encodeOpenOut(9n, 0x41);
    expect(o.length).toBe(16);
    expect(o.readUInt32LE(8)).toBe(0x41);
    const st = {
      blocks: 10,
      bfree: 0,
      bavail: 0,
      files: 1,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
    expect(encodeStatfsOut(st, 45).length).toBe(80);
    const r = encodeReply(77n, o);
    expect(r.length).toBe(32);
    expect(r.readUInt32LE(0)).toBe(32);
    expect(r.readBigUInt64LE(8)).toBe(77n);
    expect(r.subarray(16).equals(o)).toBe(true);
  });
});
