import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { CryptoPool, type PoolKey } from './pool.js';
import { Keyring } from './keyring.js';
import { nodeXts } from './node-xts.test-helper.js';
import { XtsCipher } from './xts.js';

function randomKey(bytes: 32 | 64 = 64): Buffer {
  const k = randomBytes(bytes);
  k[0] = (k[bytes / 2] ?? 0) ^ 1;
  return k;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return err instanceof AtrestError ? err.code : `not an AtrestError: ${String(err)}`;
  }
  return 'resolved';
}

describe('CryptoPool', () => {
  let pool: CryptoPool;
  beforeAll(() => {
    // everything goes to the workers, so the tests exercise them
    pool = new CryptoPool({ workers: 2, inlineMaxBytes: 0 });
  });
  afterAll(async () => {
    await pool.destroy();
  });

  it('encrypts and decrypts through the workers, like Node’s aes-256-xts', async () => {
    const key = randomKey();
    const pk = await pool.addKey(key);
    for (const [sectorSize, sectors, first] of [
      [512, 1, 0],
      [512, 700, 2 ** 33 + 1],
      [4096, 3, 8],
      [1024, 400, 2 ** 40],
      [2048, 2, 6],
    ] as const) {
      const plain = randomBytes(sectorSize * sectors);
      const data = Buffer.from(plain);
      const enc = await pk.encrypt(data, sectorSize, first);
      expect(enc.equals(nodeXts(key, plain, sectorSize, first))).toBe(true);
      const dec = await pk.decrypt(Buffer.from(enc), sectorSize, first);
      expect(dec.equals(plain)).toBe(true);
    }
    await pk.wipe();
  });

  it('copies the key: the caller may wipe its own copy right away', async () => {
    const key = randomKey();
    const expected = nodeXts(key, Buffer.alloc(8192), 4096, 0);
    const pk = await pool.addKey(key);
    key.fill(0);
    expect((await pk.encrypt(Buffer.alloc(8192), 4096, 0)).equals(expected)).toBe(true);
    await pk.wipe();
  });

  it('runs many requests for several keys at once', async () => {
    const keys = [randomKey(), randomKey(), randomKey()];
    const pks = await Promise.all(keys.map((k) => pool.addKey(k)));
    const jobs = Array.from({ length: 48 }, (_, i) => {
      const k = i % keys.length;
      const sectorSize = [512, 4096][i % 2] ?? 512;
      const plain = randomBytes(sectorSize * (1 + (i % 37)));
      const first = i * 1000;
      return { k, sectorSize, plain, first };
    });
    const results = await Promise.all(
      jobs.map((j) => {
        const pk = pks[j.k];
        if (!pk) throw new Error('no key');
        return pk.encrypt(Buffer.from(j.plain), j.sectorSize, j.first);
      }),
    );
    jobs.forEach((j, i) => {
      expect(results[i]?.equals(nodeXts(keys[j.k] ?? Buffer.alloc(0), j.plain, j.sectorSize, j.first))).toBe(
        true,
      );
    });
    await Promise.all(pks.map((p) => p.wipe()));
  });

  it('splits big runs across workers and reassembles them in order', async () => {
    const key = randomKey();
    const pk = await pool.addKey(key);
    const plain = randomBytes(1024 * 1024 + 4096 * 3);
    const enc = await pk.encrypt(Buffer.from(plain), 4096, 77 * 8);
    expect(enc.equals(nodeXts(key, plain, 4096, 77 * 8))).toBe(true);
    expect((await pk.decrypt(enc, 4096, 77 * 8)).equals(plain)).toBe(true);
    await pk.wipe();
  });

  it('after wipe(), encrypt and decrypt reject with LOCKED; other keys keep working', async () => {
    const a = await pool.addKey(randomKey());
    const bKey = randomKey();
    const b = await pool.addKey(bKey);
    await Promise.all([a.encrypt(Buffer.alloc(65536), 4096, 0), a.encrypt(Buffer.alloc(65536), 4096, 8)]);
    // both workers hold a schedule now; wipe() returns once they confirm (not after the 2 s timeout)
    const start = performance.now();
    await a.wipe();
    expect(performance.now() - start).toBeLessThan(1000);
    await a.wipe();
    expect(await code(a.encrypt(Buffer.alloc(65536), 4096, 0))).toBe('LOCKED');
    expect(await code(a.decrypt(Buffer.alloc(512), 512, 0))).toBe('LOCKED');
    const out = await b.encrypt(Buffer.alloc(65536), 4096, 0);
    expect(out.equals(nodeXts(bKey, Buffer.alloc(65536), 4096, 0))).toBe(true);
    await b.wipe();
  });

  it('a request in flight when the key is wiped either completes or fails LOCKED', async () => {
    const pk = await pool.addKey(randomKey());
    const inFlight = pk.encrypt(randomBytes(512 * 1024), 512, 0).then(
      () => 'ok',
      (err: unknown) => (err instanceof AtrestError ? err.code : 'other'),
    );
    await pk.wipe();
    expect(['ok', 'LOCKED']).toContain(await inFlight);
  });

  it('a key ref names its slot in the pool keyring: a thread can build the same cipher, and the ref goes stale on wipe', async () => {
    const key = randomKey();
    const pk = await pool.addKey(key);
    const ref = pk.keyRef();
    expect(ref.keyring).toBe(pool.keyringBuffer);
    const ring = new Keyring(ref.keyring);
    expect(ring.generation(ref.slot)).toBe(ref.generation);
    const copy = Buffer.from(ring.keyView(ref.slot).subarray(0, ring.keyLength(ref.slot)));
    expect(copy.equals(key)).toBe(true);
    const data = randomBytes(8192);
    const viaRef = Buffer.from(data);
    const c = new XtsCipher(copy);
    c.encryptInPlace(viaRef, 4096, 40);
    c.wipe();
    expect(viaRef.equals(await pk.encrypt(Buffer.from(data), 4096, 40))).toBe(true);
    await pk.wipe();
    expect(ring.generation(ref.slot)).not.toBe(ref.generation);
  });

  it('runs 256-bit (AES-128-XTS) keys through the workers, 512- and 4096-byte sectors, like Node’s aes-128-xts', async () => {
    const key = randomKey(32);
    const pk = await pool.addKey(key);
    for (const [sectorSize, sectors, first] of [
      [512, 1, 0],
      [512, 700, 2 ** 33 + 1],
      [4096, 3, 8],
      [4096, 80, 2 ** 40],
    ] as const) {
      const plain = randomBytes(sectorSize * sectors);
      const enc = await pk.encrypt(Buffer.from(plain), sectorSize, first);
      expect(enc.equals(nodeXts(key, plain, sectorSize, first))).toBe(true);
      expect((await pk.decrypt(Buffer.from(enc), sectorSize, first)).equals(plain)).toBe(true);
    }
    await pk.wipe();
    expect(await code(pk.encrypt(Buffer.alloc(65536), 4096, 0))).toBe('LOCKED');
  });

  it('keeps 256- and 512-bit keys apart in the keyring, also when a slot is reused with the other size', async () => {
    for (let round = 0; round < 3; round++) {
      const keys = [randomKey(64), randomKey(32), randomKey(32), randomKey(64)];
      const pks = await Promise.all(keys.map((k) => pool.addKey(k)));
      const plain = randomBytes(128 * 1024);
      const outs = await Promise.all(pks.map((pk) => pk.encrypt(Buffer.from(plain), 4096, 16)));
      outs.forEach((o, i) =>
        expect(o.equals(nodeXts(keys[i] ?? Buffer.alloc(0), plain, 4096, 16))).toBe(true),
      );
      // free the slots in another order so the next round puts keys of the other size into them
      await Promise.all(pks.reverse().map((pk) => pk.wipe()));
      keys.reverse();
    }
  });

  it('refuses weak keys, bad runs and bad arguments with AtrestErrors', async () => {
    const half = randomBytes(32);
    expect(await code(pool.addKey(Buffer.concat([half, half])))).toBe('WEAK_KEY');
    const half16 = randomBytes(16);
    expect(await code(pool.addKey(Buffer.concat([half16, half16])))).toBe('WEAK_KEY');
    expect(await code(pool.addKey(randomBytes(16)))).toBe('UNSUPPORTED');
    expect(await code(pool.addKey(randomBytes(48)))).toBe('UNSUPPORTED');
    const pk: PoolKey = await pool.addKey(randomKey());
    expect(await code(pk.encrypt(Buffer.alloc(1000), 512, 0))).toBe('INTERNAL');
    expect(await code(pk.encrypt(Buffer.alloc(512), 300, 0))).toBe('UNSUPPORTED');
    expect(await code(pk.encrypt(Buffer.alloc(512), 512, -1))).toBe('INTERNAL');
    expect((await pk.encrypt(Buffer.alloc(0), 512, 0)).length).toBe(0);
    await pk.wipe();
  });
});

describe('CryptoPool options and lifecycle', () => {
  it('validates options up front with USAGE', () => {
    for (const bad of [
      { workers: 0 },
      { workers: 1.5 },
      { workers: -2 },
      { workers: 100000 },
      { workers: '2' },
      { inlineMaxBytes: -1 },
      { wrokers: 2 },
      null,
      7,
    ]) {
      expect(() => new CryptoPool(bad as never)).toThrow(expect.objectContaining({ code: 'USAGE' }));
    }
  });

  it('defaults to one worker per core and does small runs inline', async () => {
    const pool = new CryptoPool();
    try {
      expect(pool.workers).toBeGreaterThanOrEqual(1);
      const key = randomKey();
      const pk = await pool.addKey(key);
      const plain = randomBytes(4096);
      expect((await pk.encrypt(Buffer.from(plain), 512, 3)).equals(nodeXts(key, plain, 512, 3))).toBe(true);
    } finally {
      await pool.destroy();
    }
  });

  it('destroy() wipes every key and refuses new ones', async () => {
    const pool = new CryptoPool({ workers: 1 });
    const pk = await pool.addKey(randomKey());
    await pk.encrypt(Buffer.alloc(65536), 512, 0);
    await pool.destroy();
    await pool.destroy();
    expect(await code(pk.encrypt(Buffer.alloc(65536), 512, 0))).toBe('LOCKED');
    expect(await code(pk.encrypt(Buffer.alloc(512), 512, 0))).toBe('LOCKED');
    expect(await code(pool.addKey(randomKey()))).toBe('USAGE');
  });
});
