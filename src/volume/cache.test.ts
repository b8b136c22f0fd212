// Write-behind and sequential read-ahead: coherent with each other, durable at fsync, silent after lock.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { xtsDecryptInPlace } from '../crypto/xts.js';
import { AtrestError } from '../errors/index.js';
import { InProcessXtsCipher, type SectorCipher } from './cipher.js';
import { Volume } from './volume.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'atrest-cache-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SIZE = 4 * 1024 * 1024;
const OFFSET = 8192;

function xtsKey(): Buffer {
  for (;;) {
    const k = randomBytes(64);
    if (!k.subarray(0, 32).equals(k.subarray(32))) return k;
  }
}

/** A cipher that delays (so writes stay pending) and can be told to fail. */
class SlowCipher implements SectorCipher {
  fail = false;
  constructor(private readonly inner: SectorCipher) {}
  async encrypt(data: Buffer, ss: number, t: number): Promise<Buffer> {
    await new Promise((r) => setTimeout(r, 5));
    if (this.fail) throw new AtrestError('IO', 'injected failure');
    return this.inner.encrypt(data, ss, t);
  }
  decrypt(data: Buffer, ss: number, t: number): Promise<Buffer> {
    return this.inner.decrypt(data, ss, t);
  }
}

async function make(
  cipherWrap?: (c: SectorCipher) => SectorCipher,
): Promise<{ v: Volume; image: string; key: Buffer }> {
  const key = xtsKey();
  const image = join(dir, `img-${randomBytes(4).toString('hex')}`);
  await writeFile(image, Buffer.alloc(OFFSET + SIZE));
  const base = new InProcessXtsCipher(key);
  const v = await Volume.open({
    imagePath: image,
    dataOffset: OFFSET,
    dataSize: SIZE,
    sectorSize: 4096,
    ivTweak: 0,
    cipher: cipherWrap ? cipherWrap(base) : base,
    readOnly: false,
    writeBehindBytes: 512 * 1024,
    readAheadBytes: 512 * 1024,
  });
  return { v, image, key };
}

async function imagePlaintext(image: string, key: Buffer): Promise<Buffer> {
  const data = (await readFile(image)).subarray(OFFSET, OFFSET + SIZE);
  xtsDecryptInPlace(key, data, 4096, 0);
  return data;
}

describe('write-behind', () => {
  it('acknowledges early, reads see pending writes, fsync makes them durable', async () => {
    const { v, image, key } = await make((c) => new SlowCipher(c));
    const model = await v.read(0, SIZE); // a fresh image decrypts to noise, not zeros
    for (let i = 0; i < 40; i++) {
      const pos = (i * 37_001) % (SIZE - 70_000);
      const data = randomBytes(1 + ((i * 7919) % 65_536));
      data.copy(model, pos);
      // acknowledged at once (the cipher takes 5 ms a batch), still pending in the background
      expect(await v.write(pos, data)).toBe(data.length);
      if (i % 5 === 0) expect((await v.read(pos, data.length)).equals(data)).toBe(true);
    }
    expect((await v.read(0, SIZE)).equals(model)).toBe(true);
    await v.fsync(true);
    expect((await imagePlaintext(image, key)).equals(model)).toBe(true);
    await v.close();
  });

  it('reports a failed background write at the next fsync (once)', async () => {
    let slow: SlowCipher | null = null;
    const { v } = await make((c) => (slow = new SlowCipher(c)));
    slow!.fail = true;
    expect(await v.write(0, randomBytes(4096))).toBe(4096);
    await expect(v.fsync(true)).rejects.toMatchObject({ code: 'IO' });
    slow!.fail = false;
    await v.fsync(true);
    await v.close();
  });

  it('writes nothing to the image once the volume is locked', async () => {
    const { v, image } = await make((c) => new SlowCipher(c));
    const before = await readFile(image);
    void v.write(0, randomBytes(256 * 1024));
    v.lock('key revoked');
    await expect(v.fsync(true)).rejects.toMatchObject({ code: 'LOCKED' });
    await v.close().catch(() => undefined);
    expect((await readFile(image)).equals(before)).toBe(true);
  });
});

describe('read-ahead', () => {
  it('serves sequential reads correctly and never returns data older than a write', async () => {
    const { v } = await make();
    const model = randomBytes(SIZE);
    await v.write(0, model);
    const chunk = 128 * 1024;
    for (let pos = 0; pos < 2 * 1024 * 1024; pos += chunk) {
      expect((await v.read(pos, chunk)).equals(model.subarray(pos, pos + chunk))).toBe(true);
      if (pos === 512 * 1024) {
        // the next chunks are prefetched now; overwrite one of them
        const fresh = randomBytes(chunk);
        fresh.copy(model, pos + 2 * chunk);
        await v.write(pos + 2 * chunk, fresh);
      }
    }
    await v.close();
  });
});
