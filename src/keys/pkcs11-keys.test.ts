import { describe, expect, it } from 'vitest';
import { labelOfVersion, versionOfLabel } from './pkcs11-keys.js';

describe('PKCS#11 KEK versions by label', () => {
  it('maps labels to versions and back', () => {
    expect(versionOfLabel('kek-1', 'kek-1')).toBe(1);
    expect(versionOfLabel('kek-1', 'kek-1.v2')).toBe(2);
    expect(versionOfLabel('kek-1', 'kek-1.v10')).toBe(10);
    expect(versionOfLabel('kek-1', 'kek-1.v0')).toBeUndefined();
    expect(versionOfLabel('kek-1', 'kek-1.v02')).toBeUndefined();
    expect(versionOfLabel('kek-1', 'kek-1.vx')).toBeUndefined();
    expect(versionOfLabel('kek-1', 'kek-10')).toBeUndefined();
    expect(labelOfVersion('kek-1', 1)).toBe('kek-1');
    expect(labelOfVersion('kek-1', 3)).toBe('kek-1.v3');
  });
});
