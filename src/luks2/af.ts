// The LUKS1 anti-forensic splitter (cryptsetup lib/luks1/af.c): spreads a key over `stripes` blocks diffused by a hash.
import { Buffer } from 'node:buffer';
import { createHash, getHashes, randomFillSync } from 'node:crypto';
import { AtrestError } from '../errors/index.js';

/** Whether `hash` can be used by the AF splitter here. */
export function afHashSupported(hash: string): boolean {
  return getHashes().includes(hash);
}

function hashSize(hash: string): number {
  if (!afHashSupported(hash)) {
    throw new AtrestError('UNSUPPORTED', `anti-forensic hash ${hash} is not available in this Node.js`);
  }
  return createHash(hash).digest().length;
}

/** Diffuses `block` in place: each digest-sized piece i becomes H(be32(i) || piece), truncated. */
function diffuse(block: Buffer, hash: string, digestSize: number): void {
  const iv = Buffer.alloc(4);
  for (let i = 0, off = 0; off < block.length; i++, off += digestSize) {
    const len = Math.min(digestSize, block.length - off);
    iv.writeUInt32BE(i, 0);
    const d = createHash(hash)
      .update(iv)
      .update(block.subarray(off, off + len))
      .digest();
    d.copy(block, off, 0, len);
    d.fill(0);
  }
}

function xorInto(dst: Buffer, a: Uint8Array, b: Uint8Array): void {
  for (let i = 0; i < dst.length; i++) dst[i] = (a[i] ?? 0) ^ (b[i] ?? 0);
}

/** Size in bytes of the split material for a key of `keySize` bytes. */
export function afSplitSize(keySize: number, stripes: number): number {
  return keySize * stripes;
}

/**
 * Splits `key` into `stripes` blocks (stripes - 1 random, the last one derived). Returns a buffer of
 * keySize * stripes bytes; the caller wipes it.
 */
export function afSplit(key: Uint8Array, stripes: number, hash: string): Buffer {
  const ds = hashSize(hash);
  const bs = key.length;
  const out = Buffer.alloc(bs * stripes);
  const buf = Buffer.alloc(bs);
  try {
    randomFillSync(out, 0, bs * (stripes - 1));
    for (let i = 0; i < stripes - 1; i++) {
      xorInto(buf, out.subarray(i * bs, (i + 1) * bs), buf);
      diffuse(buf, hash, ds);
    }
    xorInto(out.subarray((stripes - 1) * bs), key, buf);
    return out;
  } finally {
    buf.fill(0);
  }
}

/** Recovers a key of `keySize` bytes from split material; the caller wipes the result. */
export function afMerge(material: Uint8Array, keySize: number, stripes: number, hash: string): Buffer {
  if (material.length < keySize * stripes) {
    throw new AtrestError('CORRUPT_HEADER', 'keyslot material is shorter than its stripes');
  }
  const ds = hashSize(hash);
  const buf = Buffer.alloc(keySize);
  const key = Buffer.alloc(keySize);
  try {
    for (let i = 0; i < stripes - 1; i++) {
      xorInto(buf, material.subarray(i * keySize, (i + 1) * keySize), buf);
      diffuse(buf, hash, ds);
    }
    xorInto(key, material.subarray((stripes - 1) * keySize, stripes * keySize), buf);
    return key;
  } finally {
    buf.fill(0);
  }
}
