import { describe, expect, it } from 'vitest';
import { DataLayout } from './data-layout.js';

describe('DataLayout', () => {
  it('maps a view offset to its image offset and first tweak (512-byte tweak units, plus iv_tweak)', () => {
    const l = new DataLayout(16 * 1024 * 1024, 4096, 0);
    expect(l.imageOffset(0)).toBe(16 * 1024 * 1024);
    expect(l.imageOffset(8192)).toBe(16 * 1024 * 1024 + 8192);
    expect(l.firstTweak(0)).toBe(0);
    expect(l.firstTweak(8192)).toBe(16);
    const shifted = new DataLayout(0, 512, 1000);
    expect(shifted.imageOffset(1024)).toBe(1024);
    expect(shifted.firstTweak(1024)).toBe(1002);
  });

  it('a reloaded layout (the source side of a conversion) maps with its new fields', () => {
    const l = new DataLayout(0, 512, 0);
    l.offset = 4096;
    l.ivTweak = 7;
    expect(l.imageOffset(512)).toBe(4608);
    expect(l.firstTweak(512)).toBe(8);
  });
});
