// The 4096-byte LUKS2 binary header (struct luks2_hdr_disk): encode, decode, and the checksum over header + JSON area.
import { Buffer } from 'node:buffer';
import { createHash, getHashes } from 'node:crypto';

export const LUKS2_MAGIC_PRIMARY = Buffer.from('LUKS\xba\xbe', 'latin1');
export const LUKS2_MAGIC_SECONDARY = Buffer.from('SKUL\xba\xbe', 'latin1');
/** Size of the binary part of each header copy. */
export const BIN_HEADER_SIZE = 4096;
/** The header sizes LUKS2 allows (binary header + JSON area), 16 KiB to 4 MiB. */
export const VALID_HDR_SIZES: readonly number[] = [
  0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/** Where a secondary header can be when the primary is unreadable (one per valid header size). */
export const SECONDARY_OFFSETS: readonly number[] = VALID_HDR_SIZES;

export const LABEL_LEN = 48;
export const SUBSYSTEM_LEN = 48;
export const CHECKSUM_ALG_LEN = 32;
export const SALT_LEN = 64;
export const UUID_LEN = 40;
export const CSUM_LEN = 64;

// field offsets in struct luks2_hdr_disk (big-endian integers)
const OFF_MAGIC = 0;
const OFF_VERSION = 6;
const OFF_HDR_SIZE = 8;
const OFF_SEQID = 16;
const OFF_LABEL = 24;
const OFF_CSUM_ALG = 72;
const OFF_SALT = 104;
const OFF_UUID = 168;
const OFF_SUBSYSTEM = 208;
const OFF_HDR_OFFSET = 256;
const OFF_CSUM = 448;

export interface BinaryHeader {
  /** 'primary' for "LUKS\xba\xbe", 'secondary' for "SKUL\xba\xbe". */
  kind: 'primary' | 'secondary';
  version: number;
  hdrSize: number;
  seqid: bigint;
  label: string;
  checksumAlg: string;
  salt: Buffer;
  uuid: string;
  subsystem: string;
  hdrOffset: number;
  csum: Buffer;
}

/** What the first bytes of a header copy say it is, before any validation. */
export type MagicKind = 'primary' | 'secondary' | 'none';

export function magicKind(bin: Uint8Array): MagicKind {
  const head = Buffer.from(bin.buffer, bin.byteOffset, Math.min(6, bin.length));
  if (head.equals(LUKS2_MAGIC_PRIMARY)) return 'primary';
  if (head.equals(LUKS2_MAGIC_SECONDARY)) return 'secondary';
  return 'none';
}

function cString(buf: Buffer, off: number, len: number): string {
  const field = buf.subarray(off, off + len);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? len - 1 : Math.min(end, len - 1)).toString('utf8');
}

function putCString(buf: Buffer, off: number, len: number, s: string): void {
  const bytes = Buffer.from(s, 'utf8');
  bytes.copy(buf, off, 0, Math.min(bytes.length, len - 1));
}

function u64ToNumber(v: bigint): number {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : Number.MAX_SAFE_INTEGER;
}

/** Decodes the first 4096 bytes of a header copy. No validation besides sizes. */
export function decodeBinaryHeader(bin: Uint8Array): BinaryHeader {
  if (bin.length < BIN_HEADER_SIZE) throw new RangeError('binary header needs 4096 bytes');
  const b = Buffer.from(bin.buffer, bin.byteOffset, BIN_HEADER_SIZE);
  const kind = magicKind(b);
  return {
    kind: kind === 'secondary' ? 'secondary' : 'primary',
    version: b.readUInt16BE(OFF_VERSION),
    hdrSize: u64ToNumber(b.readBigUInt64BE(OFF_HDR_SIZE)),
    seqid: b.readBigUInt64BE(OFF_SEQID),
    label: cString(b, OFF_LABEL, LABEL_LEN),
    checksumAlg: cString(b, OFF_CSUM_ALG, CHECKSUM_ALG_LEN),
    salt: Buffer.from(b.subarray(OFF_SALT, OFF_SALT + SALT_LEN)),
    uuid: cString(b, OFF_UUID, UUID_LEN),
    subsystem: cString(b, OFF_SUBSYSTEM, SUBSYSTEM_LEN),
    hdrOffset: u64ToNumber(b.readBigUInt64BE(OFF_HDR_OFFSET)),
    csum: Buffer.from(b.subarray(OFF_CSUM, OFF_CSUM + CSUM_LEN)),
  };
}

/** Encodes a binary header with a zeroed checksum field (fill it with setChecksum). */
export function encodeBinaryHeader(h: Omit<BinaryHeader, 'csum'>): Buffer {
  const b = Buffer.alloc(BIN_HEADER_SIZE);
  (h.kind === 'secondary' ? LUKS2_MAGIC_SECONDARY : LUKS2_MAGIC_PRIMARY).copy(b, OFF_MAGIC);
  b.writeUInt16BE(h.version, OFF_VERSION);
  b.writeBigUInt64BE(BigInt(h.hdrSize), OFF_HDR_SIZE);
  b.writeBigUInt64BE(h.seqid, OFF_SEQID);
  putCString(b, OFF_LABEL, LABEL_LEN, h.label);
  putCString(b, OFF_CSUM_ALG, CHECKSUM_ALG_LEN, h.checksumAlg);
  if (h.salt.length !== SALT_LEN) throw new RangeError('header salt must be 64 bytes');
  h.salt.copy(b, OFF_SALT);
  putCString(b, OFF_UUID, UUID_LEN, h.uuid);
  putCString(b, OFF_SUBSYSTEM, SUBSYSTEM_LEN, h.subsystem);
  b.writeBigUInt64BE(BigInt(h.hdrOffset), OFF_HDR_OFFSET);
  return b;
}

/** Whether Node can compute the header checksum algorithm `alg` (cryptsetup writes sha256). */
export function checksumAlgSupported(alg: string): boolean {
  return alg.length > 0 && getHashes().includes(alg);
}

/**
 * The checksum of one header copy: hash of the 4096-byte binary header with the csum field zeroed,
 * then the whole JSON area (hdr_size - 4096 bytes, unused space included).
 */
export function computeChecksum(alg: string, bin: Uint8Array, jsonArea: Uint8Array): Buffer {
  const tmp = Buffer.from(Buffer.from(bin.buffer, bin.byteOffset, BIN_HEADER_SIZE));
  tmp.fill(0, OFF_CSUM, OFF_CSUM + CSUM_LEN);
  return createHash(alg).update(tmp).update(jsonArea).digest();
}

/** Writes the checksum of `bin` + `jsonArea` into `bin`'s csum field. */
export function setChecksum(alg: string, bin: Buffer, jsonArea: Uint8Array): void {
  const sum = computeChecksum(alg, bin, jsonArea);
  bin.fill(0, OFF_CSUM, OFF_CSUM + CSUM_LEN);
  sum.copy(bin, OFF_CSUM);
}

/** Whether the stored checksum of `bin` matches its content and `jsonArea`. */
export function checksumMatches(alg: string, bin: Uint8Array, jsonArea: Uint8Array): boolean {
  const sum = computeChecksum(alg, bin, jsonArea);
  const stored = Buffer.from(bin.buffer, bin.byteOffset + OFF_CSUM, sum.length);
  return sum.equals(stored);
}
