import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { unwrapKey, wrapKey } from './wrap.js';

const AIV = Buffer.from('A65959A6', 'hex');

/** Independent RFC 5649 wrap (section 4.1) over raw AES-ECB, to cross-check OpenSSL's cipher. */
function referenceKwp(kek: Buffer, plain: Buffer): Buffer {
  const ecb = (block: Buffer): Buffer => {
    const c = createCipheriv(`aes-${kek.length * 8}-ecb`, kek, null);
    c.setAutoPadding(false);
    return Buffer.concat([c.update(block), c.final()]);
  };
  const aiv = Buffer.alloc(8);
  AIV.copy(aiv, 0);
  aiv.writeUInt32BE(plain.length, 4);
  const padded = Buffer.alloc(Math.ceil(plain.length / 8) * 8);
  plain.copy(padded);
  if (padded.length === 8) return ecb(Buffer.concat([aiv, padded]));
  const n = padded.length / 8;
  let a: Buffer = aiv;
  const r: Buffer[] = Array.from({ length: n }, (_, i) => padded.subarray(i * 8, i * 8 + 8));
  for (let j = 0; j <= 5; j++) {
    for (let i = 0; i < n; i++) {
      const b = ecb(Buffer.concat([a, r[i] as Buffer]));
      const t = BigInt(n * j + i + 1);
      a = Buffer.from(b.subarray(0, 8));
      a.writeBigUInt64BE(a.readBigUInt64BE(0) ^ t, 0);
      r[i] = b.subarray(8);
    }
  }
  return Buffer.concat([a, ...r]);
}

describe('RFC 5649 known answers (section 6, 192-bit KEK) through the same OpenSSL cipher family and AIV', () => {
  const kek = Buffer.from('5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8', 'hex');
  const cases = [
    [
      'c37b7e6492584340bed12207808941155068f738',
      '138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a',
    ],
    ['466f7250617369', 'afbeb0f07dfbf5419200f2ccb50bb24f'],
  ] as const;
  for (const [plain, wrapped] of cases) {
    it(`wraps ${plain.length / 2} bytes`, () => {
      const c = createCipheriv('id-aes192-wrap-pad', kek, AIV);
      expect(Buffer.concat([c.update(Buffer.from(plain, 'hex')), c.final()]).toString('hex')).toBe(wrapped);
      expect(referenceKwp(kek, Buffer.from(plain, 'hex')).toString('hex')).toBe(wrapped);
    });
  }
});

describe('wrapKey / unwrapKey (AES-256)', () => {
  it('matches the independent RFC 5649 reference for several lengths and round-trips', () => {
    const kek = randomBytes(32);
    for (const len of [1, 7, 8, 9, 16, 20, 32, 64]) {
      const secret = randomBytes(len);
      const w = wrapKey(kek, secret);
      expect(w.equals(referenceKwp(kek, secret))).toBe(true);
      expect(w.length).toBe(Math.ceil(len / 8) * 8 + 8);
      expect(unwrapKey(kek, w).equals(secret)).toBe(true);
    }
  });
  it('refuses KEKs that are not 32 bytes', () => {
    expect(() => wrapKey(randomBytes(16), randomBytes(32))).toThrow(/KEK too short/);
    expect(() => wrapKey(randomBytes(24), randomBytes(32))).toThrow(
      expect.objectContaining({ code: 'USAGE' }),
    );
    expect(() => unwrapKey(randomBytes(33), randomBytes(40))).toThrow(/KEK too long/);
  });
  it('reports WRONG_KEY for a wrong KEK or tampered bytes, without key bytes in the message', () => {
    const kek = randomBytes(32);
    const w = wrapKey(kek, randomBytes(32));
    const other = randomBytes(32);
    expect(() => unwrapKey(other, w)).toThrow(expect.objectContaining({ code: 'WRONG_KEY' }));
    const t = Buffer.from(w);
    t[5] = (t[5] ?? 0) ^ 1;
    try {
      unwrapKey(kek, t);
      expect.fail('tampered unwrap succeeded');
    } catch (err) {
      expect(err).toMatchObject({ code: 'WRONG_KEY' });
      expect(String((err as Error).message)).not.toContain(kek.toString('hex'));
    }
    expect(() => unwrapKey(kek, Buffer.alloc(12))).toThrow(expect.objectContaining({ code: 'WRONG_KEY' }));
    expect(() => wrapKey(kek, Buffer.alloc(0))).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });
});
