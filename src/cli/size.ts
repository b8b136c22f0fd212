// Parses human sizes such as 64M or 10G (binary units, as cryptsetup and truncate read them).
import { AtrestError } from '../errors/index.js';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) {
    throw new AtrestError('USAGE', `size ${JSON.stringify(text)} is not a size`, {
      hint: 'use a number of bytes or a suffix K, M, G, T (powers of 1024), e.g. 64M or 10G',
    });
  }
  const unit = UNITS[(m[2] ?? '').toUpperCase()] ?? 1;
  const value = Number(m[1]) * unit;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new AtrestError('USAGE', `size ${text} is out of range`);
  }
  return value;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
