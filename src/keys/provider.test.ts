import { describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { FileKekProvider } from './file-provider.js';
import { PlatformKekProvider } from './platform.js';
import { redactUri, schemeOf, type KekProvider } from './kek.js';
import { providerFor } from './provider.js';

describe('redactUri', () => {
  it('hides pin-value and pin-source values in path and query attributes', () => {
    expect(
      redactUri('pkcs11:token=atrest;object=kek-1;pin-value=1234?module-path=/usr/lib/x.so&pin-value=9999'),
    ).toBe('pkcs11:token=atrest;object=kek-1;pin-value=***?module-path=/usr/lib/x.so&pin-value=***');
    expect(redactUri('pkcs11:object=k?pin-source=file:/etc/pin')).toBe('pkcs11:object=k?pin-source=***');
    expect(redactUri('file:/etc/atrest/kek')).toBe('file:/etc/atrest/kek');
  });
});

describe('providerFor', () => {
  const tempDir = useTempDir('atrest-prov-');

  it('picks by scheme, lets callers add providers, and refuses unknown schemes', () => {
    const dir = tempDir();
    const plat = providerFor('platform:', { keyStoreDir: dir });
    expect(plat).toBeInstanceOf(PlatformKekProvider);
    expect((plat as PlatformKekProvider).dir).toBe(dir);
    expect(providerFor('file:/x/kek')).toBeInstanceOf(FileKekProvider);
    const fake = { scheme: 'pkcs11' } as unknown as KekProvider;
    expect(providerFor('PKCS11:object=k', { providers: [fake] })).toBe(fake);
    expect(schemeOf('PKCS11:object=k')).toBe('pkcs11');
    expect(() => providerFor('vault:k')).toThrow(
      expect.objectContaining({ code: 'USAGE', message: 'unknown key provider scheme vault' }),
    );
    expect(() => providerFor('pkcs11:object=k;pin-value=1234')).toThrow(/unknown key provider scheme pkcs11/);
  });
});
