import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AREA_BYTES,
  AREA_OFFSET,
  decodeRecord,
  decodeRecordSlots,
  encodeRecord,
  RECORD_BYTES,
  recordOffset,
  sectorSums,
  SUMS_SLOT_BYTES,
  sumsDigest,
  sumsOffset,
} from './convert-record.js';

describe('the conversion progress record area (the layout documented in convert-record.ts)', () => {
  it('has the documented sizes and slot offsets', () => {
    expect(RECORD_BYTES).toBe(4096);
    expect(SUMS_SLOT_BYTES).toBe(524288);
    expect(AREA_BYTES).toBe(1056768);
    expect(AREA_OFFSET).toBe(290816);
    expect([recordOffset(1000, 2), recordOffset(1000, 3)]).toEqual([1000, 5096]);
    expect([sumsOffset(1000, 2), sumsOffset(1000, 3)]).toEqual([9192, 9192 + 524288]);
  });

  it('encodes a record at the documented byte offsets', () => {
    const digest = randomBytes(32);
    const b = encodeRecord({
      seq: 5,
      front: 0x123456789a,
      hot: { start: 4096, end: 8192, sumsDigest: digest },
    });
    expect(b.length).toBe(4096);
    expect(b.subarray(0, 8).toString('latin1')).toBe('ATRCONV1');
    expect(b.readBigUInt64LE(8)).toBe(5n);
    expect(b.readBigUInt64LE(16)).toBe(0x123456789an);
    expect(b.readBigUInt64LE(24)).toBe(4096n);
    expect(b.readBigUInt64LE(32)).toBe(8192n);
    expect(b[40]).toBe(1);
    expect(b.subarray(41, 73).equals(digest)).toBe(true);
    expect(b.subarray(73, 4064).every((x) => x === 0)).toBe(true);
    expect(decodeRecord(b)).toEqual({
      seq: 5,
      front: 0x123456789a,
      hot: { start: 4096, end: 8192, sumsDigest: digest },
    });
    const none = encodeRecord({ seq: 6, front: 0, hot: null });
    expect(none[40]).toBe(0);
    expect(decodeRecord(none)).toEqual({ seq: 6, front: 0, hot: null });
  });

  it('a torn record is ignored and the other slot wins; newest first', () => {
    const slots = Buffer.concat([
      encodeRecord({ seq: 4, front: 10, hot: null }),
      encodeRecord({ seq: 5, front: 5, hot: null }),
    ]);
    expect(decodeRecordSlots(slots).map((r) => r.seq)).toEqual([5, 4]);
    slots.writeUInt8(slots.readUInt8(RECORD_BYTES + 20) ^ 1, RECORD_BYTES + 20);
    expect(decodeRecordSlots(slots).map((r) => r.seq)).toEqual([4]);
    expect(decodeRecordSlots(Buffer.alloc(2 * RECORD_BYTES))).toEqual([]);
  });

  it('sums are one SHA-256 per sector, and the digest covers them all', () => {
    const data = randomBytes(4 * 512);
    const sums = sectorSums(data, 512);
    expect(sums.length).toBe(4 * 32);
    expect(sectorSums(data.subarray(512, 1024), 512).equals(sums.subarray(32, 64))).toBe(true);
    expect(sumsDigest(sums).length).toBe(32);
  });
});
