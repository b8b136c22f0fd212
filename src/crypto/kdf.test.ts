import { pbkdf2Sync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { argon2, benchmarkPbkdf2Iterations, pbkdf2, PBKDF2_MIN_ITERATIONS } from './kdf.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const h = (s: string): string => s.replace(/\s+/g, '');

describe('pbkdf2', () => {
  it('matches RFC 7914 section 11 (PBKDF2-HMAC-SHA256, "passwd"/"salt", c=1, 64 bytes)', async () => {
    const key = await pbkdf2(b('passwd'), b('salt'), 1, 64, 'sha256');
    expect(key.toString('hex')).toBe(
      h(`55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc
         49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783`),
    );
  });

  it('matches RFC 6070 (PBKDF2-HMAC-SHA1, "password"/"salt", c=4096, 20 bytes)', async () => {
    const key = await pbkdf2(b('password'), b('salt'), 4096, 20, 'sha1');
    expect(key.toString('hex')).toBe('4b007901b765489abead49d926f721d065a429c1');
  });

  it('supports sha512 like node:crypto', async () => {
    const key = await pbkdf2(b('pw'), b('NaCl'), 1000, 64, 'sha512');
    expect(key.equals(pbkdf2Sync('pw', 'NaCl', 1000, 64, 'sha512'))).toBe(true);
  });

  it('refuses bad parameters', async () => {
    await expect(pbkdf2(b('p'), b('s'), 0, 32, 'sha256')).rejects.toMatchObject({ code: 'USAGE' });
    await expect(pbkdf2(b('p'), b('s'), 1, 0, 'sha256')).rejects.toMatchObject({ code: 'USAGE' });
    await expect(pbkdf2(b('p'), b('s'), 1, 32, 'md5' as 'sha1')).rejects.toMatchObject({
      code: 'UNSUPPORTED',
    });
    await expect(pbkdf2('p' as unknown as Buffer, b('s'), 1, 32, 'sha1')).rejects.toMatchObject({
      code: 'USAGE',
    });
  });
});

describe('argon2', () => {
  // Known answers from the Argon2 reference implementation's tests (phc-winner-argon2 src/test.c,
  // version 0x13). RFC 9106's own vectors use a secret and associated data, which LUKS2 never
  // sets and hash-wasm cannot take, so they do not apply to this wrapper.
  const cases = [
    { type: 'argon2id', m: 256, t: 2, p: 1, out: 'nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4' },
    { type: 'argon2id', m: 256, t: 2, p: 2, out: 'bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc' },
    { type: 'argon2id', m: 65536, t: 2, p: 1, out: 'CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc' },
    { type: 'argon2i', m: 256, t: 2, p: 2, out: 'T/XOJ2mh1/TIpJHfCdQan76Q5esCFVoT5MAeIM1Oq2E' },
  ] as const;

  it.each(cases)('$type m=$m t=$t p=$p "password"/"somesalt"', async ({ type, m, t, p, out }) => {
    const key = await argon2(type, b('password'), b('somesalt'), {
      timeCost: t,
      memoryKiB: m,
      parallelism: p,
      keyLength: 32,
    });
    expect(Buffer.isBuffer(key)).toBe(true);
    expect(key.toString('base64').replace(/=+$/, '')).toBe(out);
  });

  it('refuses bad parameters', async () => {
    const ok = { timeCost: 1, memoryKiB: 64, parallelism: 1, keyLength: 32 };
    await expect(argon2('argon2d' as 'argon2i', b('p'), b('saltsalt'), ok)).rejects.toMatchObject({
      code: 'UNSUPPORTED',
    });
    await expect(argon2('argon2id', b('p'), b('short'), ok)).rejects.toMatchObject({ code: 'USAGE' });
    await expect(argon2('argon2id', b('p'), b('saltsalt'), { ...ok, timeCost: 0 })).rejects.toMatchObject({
      code: 'USAGE',
    });
    await expect(
      argon2('argon2id', b('p'), b('saltsalt'), { ...ok, memoryKiB: 8 * 1024 * 1024 }),
    ).rejects.toMatchObject({ code: 'USAGE' });
  });
});

describe('benchmarkPbkdf2Iterations', () => {
  it('scales a short timed run to the target and never goes below 1000', async () => {
    const fast = await benchmarkPbkdf2Iterations('sha256', 32, 50);
    expect(fast).toBeGreaterThanOrEqual(PBKDF2_MIN_ITERATIONS);
    const start = performance.now();
    await pbkdf2(b('x'), b('y'), fast, 32, 'sha256');
    const ms = performance.now() - start;
    expect(ms).toBeGreaterThan(10);
    expect(ms).toBeLessThan(500);
    expect(await benchmarkPbkdf2Iterations('sha512', 64, 0.01)).toBe(PBKDF2_MIN_ITERATIONS);
    await expect(benchmarkPbkdf2Iterations('sha256', 32, -1)).rejects.toMatchObject({ code: 'USAGE' });
  });
});
