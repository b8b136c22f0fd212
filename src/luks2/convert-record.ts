// The byte format of an in-place conversion's progress record area in the LUKS2 header file: record slots, sums slots, encode/decode.
//
// The area lies in the keyslots area of the header file, at the conversion plan's `area.offset` (AREA_OFFSET in
// headers atrest makes for a conversion: after keyslot 0) and is `area.size` bytes (AREA_BYTES). All integers
// are unsigned 64-bit little-endian. This comment is the one description of these bytes.
//
// Area (AREA_BYTES = 2 * 4096 + 2 * SUMS_SLOT_BYTES = 1056768 bytes):
//
//   | offset in area        | size            | field                                                       |
//   |-----------------------|-----------------|-------------------------------------------------------------|
//   | 0                     | 4096            | record slot 0: the record with an even seq                  |
//   | 4096                  | 4096            | record slot 1: the record with an odd seq                   |
//   | 8192                  | SUMS_SLOT_BYTES | sums slot 0: the sums named by the record with an even seq  |
//   | 8192+SUMS_SLOT_BYTES  | SUMS_SLOT_BYTES | sums slot 1: the sums named by the record with an odd seq   |
//
// SUMS_SLOT_BYTES = (MAX_BATCH_BYTES / 512) * 32 = 524288: one SHA-256 per source sector of the largest batch
// with 512-byte sectors. Record N goes to slot N % 2 and its sums to sums slot N % 2, so writing the next record
// or sums never overwrites the newest record or the sums it names; a torn write leaves the other slot valid.
//
// Record (RECORD_BYTES = 4096 bytes; the newest valid record, by seq, is the state; no valid record: nothing
// converted yet, front = plan size):
//
//   | offset | size | field                                                                               |
//   |--------|------|-------------------------------------------------------------------------------------|
//   | 0      | 8    | magic "ATRCONV1" (latin1)                                                           |
//   | 8      | 8    | seq: 1, 2, 3, ... one more than the record before                                   |
//   | 16     | 8    | front: bytes of plaintext view below which data is still in the source layout       |
//   | 24     | 8    | hot.start: first plaintext byte of the armed hot zone (0 when none)                 |
//   | 32     | 8    | hot.end: end of the armed hot zone (0 when none)                                    |
//   | 40     | 1    | 1: a hot zone is armed (checksum resilience), 0: none                               |
//   | 41     | 32   | SHA-256 of the hot zone's sums (as written in sums slot seq % 2); zero when none    |
//   | 73     | 3991 | zero                                                                                |
//   | 4064   | 32   | SHA-256 of bytes 0..4063: a record whose hash does not match is ignored (torn)      |
//
// Sums: the SHA-256 of each source sector (the plan's sector size) of the hot zone as read from the disk,
// concatenated in sector order: (hot.end - hot.start) / sectorSize * 32 bytes at the start of the sums slot.
//
// Crash ordering (every write is durable before the next step starts):
// - data before the record that names it: datashift writes and syncs a batch's target data, then the record
//   whose front is the batch start; checksum syncs the batch's converted data before the next record.
// - sums before the record: checksum writes the sums durably, then the record arming the hot zone (with
//   their digest), and only then overwrites the zone's data. Sums whose digest does not match the record's
//   were never followed by a data write, so the zone is still intact source.
// - at the end the sums slots are zeroed; the records stay (front = 0) until the area is reused.
import { createHash } from 'node:crypto';

/** Bytes of one record slot. */
export const RECORD_BYTES = 4096;
const RECORD_MAGIC = Buffer.from('ATRCONV1', 'latin1');
/** Bytes of one sector's sum (SHA-256). */
export const SUM_BYTES = 32;
/** The largest batch a sums slot holds the sums of (512-byte sectors: the worst case). */
export const MAX_BATCH_BYTES = 8 * 1024 * 1024;
/** Bytes of one sums slot: one SHA-256 per source sector of the largest batch. */
export const SUMS_SLOT_BYTES = (MAX_BATCH_BYTES / 512) * SUM_BYTES;
/** Bytes of the whole area: two record slots, then two sums slots. */
export const AREA_BYTES = 2 * RECORD_BYTES + 2 * SUMS_SLOT_BYTES;
/** Where the area goes in a header made for a conversion: after keyslot 0 (32 KiB + 252 KiB). */
export const AREA_OFFSET = 32768 + 258048;

export interface ConvertRecord {
  seq: number;
  front: number;
  /** Hot zone armed for checksum recovery, or null. */
  hot: { start: number; end: number; sumsDigest: Buffer } | null;
}

/** Byte offset (in the header file) of the record slot of record `seq`. */
export function recordOffset(areaOffset: number, seq: number): number {
  return areaOffset + (seq % 2) * RECORD_BYTES;
}

/** Byte offset (in the header file) of the sums slot named by record `seq`. */
export function sumsOffset(areaOffset: number, seq: number): number {
  return areaOffset + 2 * RECORD_BYTES + (seq % 2) * SUMS_SLOT_BYTES;
}

export function encodeRecord(r: ConvertRecord): Buffer {
  const b = Buffer.alloc(RECORD_BYTES);
  RECORD_MAGIC.copy(b, 0);
  b.writeBigUInt64LE(BigInt(r.seq), 8);
  b.writeBigUInt64LE(BigInt(r.front), 16);
  if (r.hot) {
    b.writeBigUInt64LE(BigInt(r.hot.start), 24);
    b.writeBigUInt64LE(BigInt(r.hot.end), 32);
    b[40] = 1;
    r.hot.sumsDigest.copy(b, 41);
  }
  createHash('sha256')
    .update(b.subarray(0, RECORD_BYTES - 32))
    .digest()
    .copy(b, RECORD_BYTES - 32);
  return b;
}

export function decodeRecord(b: Buffer): ConvertRecord | null {
  if (b.length < RECORD_BYTES || !b.subarray(0, 8).equals(RECORD_MAGIC)) return null;
  const sum = createHash('sha256')
    .update(b.subarray(0, RECORD_BYTES - 32))
    .digest();
  if (!sum.equals(b.subarray(RECORD_BYTES - 32, RECORD_BYTES))) return null;
  const num = (o: number): number => Number(b.readBigUInt64LE(o));
  return {
    seq: num(8),
    front: num(16),
    hot: b[40] === 1 ? { start: num(24), end: num(32), sumsDigest: Buffer.from(b.subarray(41, 73)) } : null,
  };
}

/** The valid records of both slots (`slots`: the area's first 2 * RECORD_BYTES), newest first. */
export function decodeRecordSlots(slots: Buffer): ConvertRecord[] {
  return [decodeRecord(slots.subarray(0, RECORD_BYTES)), decodeRecord(slots.subarray(RECORD_BYTES))]
    .filter((r): r is ConvertRecord => r !== null)
    .sort((x, y) => y.seq - x.seq);
}

/** SHA-256 of each sector of `data`, concatenated. */
export function sectorSums(data: Buffer, sectorSize: number): Buffer {
  const out = Buffer.alloc((data.length / sectorSize) * SUM_BYTES);
  for (let i = 0, o = 0; i < data.length; i += sectorSize, o += SUM_BYTES) {
    createHash('sha256')
      .update(data.subarray(i, i + sectorSize))
      .digest()
      .copy(out, o);
  }
  return out;
}

/** The digest a record keeps of its hot zone's sums. */
export function sumsDigest(sums: Buffer): Buffer {
  return createHash('sha256').update(sums).digest();
}
