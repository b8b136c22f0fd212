import { Buffer } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  BIN_HEADER_SIZE,
  checksumMatches,
  computeChecksum,
  decodeBinaryHeader,
  encodeBinaryHeader,
  magicKind,
  setChecksum,
} from './binary-header.js';
import { afMerge, afSplit } from './af.js';

const base = {
  kind: 'primary' as const,
  version: 2,
  hdrSize: 16384,
  seqid: 7n,
  label: 'my label',
  checksumAlg: 'sha256',
  salt: randomBytes(64),
  uuid: '0f2b8f8e-64b4-4d1b-a0b2-3d8a3cf0f3a1',
  subsystem: 'sub',
  hdrOffset: 0,
};

describe('binary header', () => {
  it('round-trips every field at the cryptsetup offsets', () => {
    const bin = encodeBinaryHeader(base);
    expect(bin.length).toBe(BIN_HEADER_SIZE);
    expect(bin.subarray(0, 6).toString('latin1')).toBe('LUKS\xba\xbe');
    expect(bin.readUInt16BE(6)).toBe(2);
    expect(bin.readBigUInt64BE(8)).toBe(16384n);
    expect(bin.readBigUInt64BE(16)).toBe(7n);
    expect(bin.subarray(24, 32).toString()).toBe('my label');
    expect(bin.subarray(72, 78).toString()).toBe('sha256');
    expect(bin.subarray(104, 168).equals(base.salt)).toBe(true);
    expect(bin.subarray(168, 204).toString()).toBe(base.uuid);
    expect(bin.readBigUInt64BE(256)).toBe(0n);
    const d = decodeBinaryHeader(bin);
    expect({ ...d, csum: undefined }).toEqual({ ...base, csum: undefined });
    const sec = encodeBinaryHeader({ ...base, kind: 'secondary', hdrOffset: 16384 });
    expect(magicKind(sec)).toBe('secondary');
    expect(decodeBinaryHeader(sec).hdrOffset).toBe(16384);
  });

  it('checksums the binary header with csum zeroed, then the whole JSON area', () => {
    const bin = encodeBinaryHeader(base);
    const area = Buffer.alloc(16384 - 4096);
    area.write('{"a":1}');
    setChecksum('sha256', bin, area);
    const zeroed = Buffer.from(bin);
    zeroed.fill(0, 448, 512);
    const expected = createHash('sha256').update(zeroed).update(area).digest();
    expect(bin.subarray(448, 480).equals(expected)).toBe(true);
    expect(bin.subarray(480, 512).every((b) => b === 0)).toBe(true);
    expect(computeChecksum('sha256', bin, area).equals(expected)).toBe(true);
    expect(checksumMatches('sha256', bin, area)).toBe(true);
    area[100] = 1;
    expect(checksumMatches('sha256', bin, area)).toBe(false);
  });
});

describe('AF splitter', () => {
  for (const hash of ['sha1', 'sha256', 'sha512']) {
    it(`splits and merges with ${hash}`, () => {
      const key = randomBytes(64);
      const split = afSplit(key, 4000, hash);
      expect(split.length).toBe(64 * 4000);
      expect(afMerge(split, 64, 4000, hash).equals(key)).toBe(true);
      const again = afSplit(key, 4000, hash);
      expect(again.equals(split)).toBe(false);
      split[5] = (split[5] ?? 0) ^ 1;
      expect(afMerge(split, 64, 4000, hash).equals(key)).toBe(false);
    });
  }

  it('handles keys that are not a multiple of the digest size', () => {
    const key = randomBytes(50);
    expect(afMerge(afSplit(key, 3, 'sha256'), 50, 3, 'sha256').equals(key)).toBe(true);
  });
});
