import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { aesKeyUnwrapPad, aesKeyWrapPad } from './key-wrap.js';

const KEK = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const SECRET64 = Buffer.from(Array.from({ length: 64 }, (_, i) => 0xff - i));

/** RFC 5649 by its own steps (section 4.1) over AES-256-ECB: an implementation independent of OpenSSL's KWP. */
function rfc5649Wrap(kek: Buffer, p: Buffer): Buffer {
  const aiv = Buffer.alloc(8);
  aiv.write('a65959a6', 'hex');
  aiv.writeUInt32BE(p.length, 4);
  const padded = Buffer.concat([p, Buffer.alloc((8 - (p.length % 8)) % 8)]);
  const aes = (block: Buffer): Buffer => {
    const c = createCipheriv('aes-256-ecb', kek, null).setAutoPadding(false);
    return Buffer.concat([c.update(block), c.final()]);
  };
  const n = padded.length / 8;
  if (n === 1) return aes(Buffer.concat([aiv, padded]));
  let a: Buffer = aiv;
  const r: Buffer[] = Array.from({ length: n }, (_, i) => padded.subarray(i * 8, i * 8 + 8));
  for (let j = 0; j <= 5; j++) {
    for (let i = 0; i < n; i++) {
      const b = aes(Buffer.concat([a, r[i] as Buffer]));
      const t = BigInt(n * j + i + 1);
      a = Buffer.alloc(8);
      a.writeBigUInt64BE(b.readBigUInt64BE(0) ^ t);
      r[i] = b.subarray(8);
    }
  }
  return Buffer.concat([a, ...r]);
}

describe('AES-256 key wrap with padding (RFC 5649)', () => {
  it('known answers: the bytes atrest has always written (KEK tokens, a reencryption plan oldKey)', () => {
    expect(aesKeyWrapPad(KEK, SECRET64).toString('hex')).toBe(
      '72bebc46dced2bd3fe0f4fa442a98556cfd73bed8107a7f7c9d35e334ddf1efc0f9f0b285ab23851195478882013df4855275266c148008d6451898e0406d5698a3529824698ba46',
    );
    expect(aesKeyWrapPad(KEK, Buffer.from('01234', 'latin1')).toString('hex')).toBe(
      '184864ebaf3e2ec53996d156fd8a4e66',
    );
    expect(aesKeyWrapPad(KEK, Buffer.from('01234567', 'latin1')).toString('hex')).toBe(
      '89c52051e50537fb7fa959bae2a6baed',
    );
  });

  it('equals RFC 5649 computed step by step from AES-256, for every padding length', () => {
    const kek = randomBytes(32);
    for (const len of [1, 5, 7, 8, 9, 15, 16, 17, 32, 63, 64, 65]) {
      const p = randomBytes(len);
      const w = aesKeyWrapPad(kek, p);
      expect(w.toString('hex')).toBe(rfc5649Wrap(kek, p).toString('hex'));
      expect(aesKeyUnwrapPad(kek, w).equals(p)).toBe(true);
    }
  });

  it('unwrapping under another KEK or damaged bytes throws', () => {
    const w = aesKeyWrapPad(KEK, SECRET64);
    expect(() => aesKeyUnwrapPad(randomBytes(32), w)).toThrow();
    const bad = Buffer.from(w);
    bad[10] = (bad[10] ?? 0) ^ 1;
    expect(() => aesKeyUnwrapPad(KEK, bad)).toThrow();
  });
});
