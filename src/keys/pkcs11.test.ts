import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { Pkcs11Provider } from './pkcs11.js';

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
