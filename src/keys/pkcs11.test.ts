import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { labelOfVersion, Pkcs11Provider, versionOfLabel } from './pkcs11.js';

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

describe('Pkcs11Provider input checks', () => {
  it('rejects URIs without module, token or object as USAGE, PIN redacted', async () => {
    const p = new Pkcs11Provider();
    const err = await p.current('pkcs11:token=a;object=k?pin-value=s3cret').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AtrestError);
    expect((err as AtrestError).code).toBe('USAGE');
    expect((err as AtrestError).oneLine()).not.toContain('s3cret');
    const noObj = await p.current('pkcs11:token=a?module-path=/x.so').catch((e: unknown) => e);
    expect((noObj as AtrestError).code).toBe('USAGE');
    p.close();
  });
  it('rejects a blob that is not one of ours as WRONG_KEY before touching the module', async () => {
    const p = new Pkcs11Provider();
    const ref = { uri: 'pkcs11:token=a;object=k?module-path=/nonexistent.so', keyId: 'a/k', version: 1 };
    const err = await p.unwrap(ref, Buffer.alloc(40)).catch((e: unknown) => e);
    expect((err as AtrestError).code).toBe('WRONG_KEY');
    p.close();
  });
});
