import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { parsePkcs11Uri, redactPkcs11Uri, stripPkcs11Query } from './pkcs11-uri.js';

function usageOf(uri: string): string {
  try {
    parsePkcs11Uri(uri);
  } catch (err) {
    expect(err).toBeInstanceOf(AtrestError);
    expect((err as AtrestError).code).toBe('USAGE');
    expect((err as AtrestError).oneLine()).not.toContain('\n');
    return (err as AtrestError).message;
  }
  throw new Error('expected USAGE');
}

describe('parsePkcs11Uri', () => {
  it('parses path and query attributes', () => {
    const u = parsePkcs11Uri(
      'pkcs11:token=atrest;object=kek-1;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234',
    );
    expect(u.token).toBe('atrest');
    expect(u.object).toBe('kek-1');
    expect(u.type).toBe('secret-key');
    expect(u.modulePath).toBe('/usr/lib/softhsm/libsofthsm2.so');
    expect(u.pinValue).toBe('1234');
  });
  it('percent-decodes values, id as bytes', () => {
    const u = parsePkcs11Uri('pkcs11:token=my%20token;object=k%3Bx;id=%01%02%ff?pin-source=/run/pin%20file');
    expect(u.token).toBe('my token');
    expect(u.object).toBe('k;x');
    expect(u.id?.equals(Buffer.from([1, 2, 255]))).toBe(true);
    expect(u.pinSource).toBe('/run/pin file');
  });
  it('accepts an empty path and vendor x- attributes', () => {
    expect(parsePkcs11Uri('pkcs11:')).toEqual({});
    expect(parsePkcs11Uri('pkcs11:token=t;x-foo=1?x-bar=2').token).toBe('t');
  });
  it('rejects bad input with USAGE', () => {
    expect(usageOf('file:/x')).toMatch(/not a PKCS#11 URI/);
    expect(usageOf('pkcs11:token=a;token=b')).toMatch(/duplicate/);
    expect(usageOf('pkcs11:colour=red')).toMatch(/unknown path attribute/);
    expect(usageOf('pkcs11:token=a?foo=1')).toMatch(/unknown query attribute/);
    expect(usageOf('pkcs11:token=%zz')).toMatch(/percent-encoding/);
    expect(usageOf('pkcs11:token=%ff')).toMatch(/UTF-8/);
    expect(usageOf('pkcs11:token')).toMatch(/malformed/);
    expect(usageOf('pkcs11:type=private')).toMatch(/secret-key/);
    expect(usageOf('pkcs11:type=bogus')).toMatch(/unknown object type/);
    expect(usageOf('pkcs11:token=a?pin-value=1&pin-source=/p')).toMatch(/not both/);
    expect(usageOf('pkcs11:token=a?module-name=softhsm2')).toMatch(/module-path/);
  });
  it('never puts the PIN in an error message', () => {
    expect(usageOf('pkcs11:token=a?pin-value')).not.toContain('secret');
    expect(usageOf('pkcs11:token=a?pin-value=s3cret&pin-value=s3cret')).not.toContain('s3cret');
  });
});

describe('redactPkcs11Uri / stripPkcs11Query', () => {
  it('replaces pin-value and pin-source values', () => {
    expect(redactPkcs11Uri('pkcs11:token=a;object=k?module-path=/m.so&pin-value=1234')).toBe(
      'pkcs11:token=a;object=k?module-path=/m.so&pin-value=***',
    );
    expect(redactPkcs11Uri('pkcs11:token=a?PIN-SOURCE=/etc/pin')).toBe('pkcs11:token=a?PIN-SOURCE=***');
    expect(redactPkcs11Uri('pkcs11:token=a')).toBe('pkcs11:token=a');
  });
  it('strips the query', () => {
    expect(stripPkcs11Query('pkcs11:token=a;object=k?pin-value=1')).toBe('pkcs11:token=a;object=k');
  });
});
