import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { formatBytes, parseSize } from './size.js';

describe('parseSize', () => {
  it('reads plain bytes and binary suffixes', () => {
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('64M')).toBe(64 * 2 ** 20);
    expect(parseSize('10G')).toBe(10 * 2 ** 30);
    expect(parseSize('1k')).toBe(1024);
    expect(parseSize('2MiB')).toBe(2 * 2 ** 20);
  });
  it('refuses nonsense with a usage error', () => {
    for (const bad of ['', 'abc', '-1M', '1.5G', '0', '10X']) {
      expect(() => parseSize(bad)).toThrow(AtrestError);
    }
  });
  it('formats bytes for humans', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(64 * 2 ** 20)).toBe('64.0 MiB');
  });
});
