import { randomBytes, randomInt } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalKeyring, type KeyRef } from '../crypto/keyring.js';
import { XtsCipher } from '../crypto/xts.js';
import { isAtrestError } from '../errors/index.js';
import { openDiskIo } from './disk-io-open.js';
import { Volume, type ConversionSplit } from './volume.js';
import { runWorker } from './worker-spawn.test-helper.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const dir = useTempDir('atrest-sector-io-');
const keyring = new LocalKeyring();

function xtsKey(): Buffer {
  for (;;) {
    const k = randomBytes(64);
    if (!k.subarray(0, 32).equals(k.subarray(32))) return k;
  }
}

function codeOf(fn: () => unknown): unknown {
  try {
    fn();
    return null;
  } catch (err) {
    return isAtrestError(err) ? err.code : err;
  }
}

interface Setup {
  volume: Volume;
  image: string;
  key: Buffer;
  ref: KeyRef;
  dataOffset: number;
  ivTweak: number;
}

async function setup(
  o: {
    sectorSize?: number;
    dataSize?: number;
    ivTweak?: number;
    imageBytes?: Buffer;
    conversion?: ConversionSplit;
    key?: Buffer;
    ref?: KeyRef;
  } = {},
): Promise<Setup> {
  const key = o.key ?? xtsKey();
  const ref = o.ref ?? keyring.add(key);
  const dataOffset = 8192;
  const dataSize = o.dataSize ?? 256 * 1024;
  const image = join(dir(), `img-${randomBytes(4).toString('hex')}`);
  await writeFile(image, o.imageBytes ?? Buffer.alloc(dataOffset + dataSize));
  const ivTweak = o.ivTweak ?? 0;
  const volume = await Volume.open({
    imagePath: image,
    dataOffset,
    dataSize,
    sectorSize: o.sectorSize ?? 512,
    ivTweak,
    key: ref,
    readOnly: false,
    ...(o.conversion ? { conversion: o.conversion } : {}),
  });
  return { volume, image, key, ref, dataOffset, ivTweak };
}

/** The image bytes of `plain` encrypted with `key` as one run from data offset `at` (XtsCipher directly). */
function encrypted(key: Buffer, plain: Buffer, sectorSize: number, at: number, ivTweak: number): Buffer {
  const c = new XtsCipher(key);
  const out = Buffer.from(plain);
  c.encryptInPlace(out, sectorSize, at / 512 + ivTweak);
  c.wipe();
  return out;
}

describe('DiskIo (the sync data path)', () => {
  for (const sectorSize of [512, 4096]) {
    it(`writes ciphertext bit-identical to XtsCipher over the raw image, any alignment (sector ${sectorSize})`, async () => {
      const size = 128 * 1024;
      const s = await setup({ sectorSize, dataSize: size, ivTweak: 77 });
      const io = openDiskIo(s.volume.descriptor());
      const model = randomBytes(size);
      expect(io.write(0, model)).toBe(size);
      for (let i = 0; i < 200; i++) {
        const pos = randomInt(0, size);
        const len = randomInt(1, Math.min(3 * sectorSize + 7, size - pos + 1));
        const data = randomBytes(len);
        // the worker path and the main-thread path are one: alternate them
        if (i % 2 === 0) expect(io.write(pos, data)).toBe(len);
        else expect(await s.volume.write(pos, data)).toBe(len);
        data.copy(model, pos);
        const out = Buffer.alloc(len + 5);
        expect(io.readInto(pos, len + 5, out)).toBe(Math.min(len + 5, size - pos));
        expect(out.subarray(0, len).equals(data)).toBe(true);
      }
      const raw = (await readFile(s.image)).subarray(s.dataOffset, s.dataOffset + size);
      expect(raw.equals(encrypted(s.key, model, sectorSize, 0, s.ivTweak))).toBe(true);
      const all = Buffer.alloc(size);
      expect(io.readInto(0, size + 100, all)).toBe(size);
      expect(all.equals(model)).toBe(true);
      expect(io.readInto(size, 10, Buffer.alloc(10))).toBe(0);
      expect(codeOf(() => io.write(size, Buffer.alloc(1)))).toBe('NO_SPACE');
      io.close();
      await s.volume.close();
    });
  }

  for (const source of ['plaintext', 'old key'] as const) {
    it(`serves a conversion: below the front the source layout (${source}), at and above it the target`, async () => {
      const ss = 512;
      const size = 64 * 1024;
      const front = 24 * 1024;
      const sourceOffset = 8192 + size; // the source data lives after the target area
      const sourceIvTweak = source === 'old key' ? 12345 : 0;
      const oldKey = xtsKey();
      const oldRef = source === 'old key' ? keyring.add(oldKey) : null;
      const key = xtsKey();
      const model = randomBytes(size);
      const img = Buffer.alloc(sourceOffset + size);
      const enc = (k: Buffer | null, p: Buffer, at: number, tw: number): Buffer =>
        k === null ? Buffer.from(p) : encrypted(k, p, ss, at, tw);
      const srcKey = source === 'old key' ? oldKey : null;
      enc(srcKey, model.subarray(0, front), 0, sourceIvTweak).copy(img, sourceOffset);
      enc(key, model.subarray(front), front, 0).copy(img, 8192 + front);
      const s = await setup({
        dataSize: size,
        imageBytes: img,
        key,
        conversion: { front, sourceOffset, sourceKey: oldRef, sourceIvTweak },
      });
      const io = openDiskIo(s.volume.descriptor());
      const all = Buffer.alloc(size);
      io.readInto(0, size, all);
      expect(all.equals(model)).toBe(true);
      // an unaligned write straddling the front lands in both layouts
      const data = randomBytes(3000);
      io.write(front - 1500, data);
      data.copy(model, front - 1500);
      expect((await s.volume.read(0, size)).equals(model)).toBe(true);
      const raw = await readFile(s.image);
      expect(
        raw
          .subarray(sourceOffset, sourceOffset + front)
          .equals(enc(srcKey, model.subarray(0, front), 0, sourceIvTweak)),
      ).toBe(true);
      expect(raw.subarray(8192 + front, 8192 + size).equals(enc(key, model.subarray(front), front, 0))).toBe(
        true,
      );
      // the converter moves the front (holding the range): the data there is now read from the target
      const release = await s.volume.lockRange(front - 4096, front);
      enc(key, model.subarray(front - 4096, front), front - 4096, 0).copy(raw, 8192 + front - 4096);
      await writeFile(s.image, raw);
      s.volume.setConversionFront(front - 4096);
      release();
      expect(s.volume.conversionFront).toBe(front - 4096);
      io.readInto(0, size, all);
      expect(all.equals(model)).toBe(true);
      io.close();
      await s.volume.close();
      if (oldRef) keyring.wipe(oldRef);
    });
  }

  it('after lock nothing is written: LOCKED in every thread, also for a request that waited for its range', async () => {
    const s = await setup({ dataSize: 64 * 1024 });
    const io = openDiskIo(s.volume.descriptor());
    io.write(0, Buffer.alloc(4096, 1));
    // a worker's write waits behind a converter-style exclusive hold
    const release = await s.volume.lockRange(8192, 16384);
    const worker = runWorker({
      kind: 'single-write',
      descriptor: s.volume.descriptor(),
      position: 9000,
      fill: 0x77,
      length: 5000,
    });
    for (let i = 0; i < 400 && !s.volume.busy; i++) await new Promise((r) => setTimeout(r, 25));
    expect(s.volume.busy).toBe(true);
    const before = await readFile(s.image);
    s.volume.lock('key revoked');
    release();
    const reply = await worker;
    expect(reply.ok ? 'ok' : reply.code).toBe('LOCKED');
    await s.volume.settle();
    expect(codeOf(() => io.write(0, Buffer.alloc(10, 2)))).toBe('LOCKED');
    expect(codeOf(() => io.readInto(0, 10, Buffer.alloc(10)))).toBe('LOCKED');
    expect(codeOf(() => io.sync(true))).toBe('LOCKED');
    expect((await readFile(s.image)).equals(before)).toBe(true);
    expect(s.volume.foreground().inFlight).toBe(0);
    io.close();
    await s.volume.close();
  }, 60_000);

  it('refresh() drops a wiped key and never uses a slot reused by another key', async () => {
    const s = await setup({ dataSize: 16 * 1024 });
    const io = openDiskIo(s.volume.descriptor());
    io.write(0, Buffer.from('hello'));
    expect(io.refresh()).toBe(true);
    keyring.wipe(s.ref);
    expect(io.refresh()).toBe(false);
    const other = keyring.add(xtsKey());
    expect(other.slot).toBe(s.ref.slot);
    expect(codeOf(() => io.readInto(0, 5, Buffer.alloc(5)))).toBe('LOCKED');
    expect(codeOf(() => io.write(0, Buffer.from('x')))).toBe('LOCKED');
    expect(io.refresh()).toBe(false);
    keyring.wipe(other);
    io.close();
    await s.volume.close();
  });

  it("close() wipes this thread's keys; every later call is LOCKED", async () => {
    const s = await setup({ dataSize: 16 * 1024 });
    const io = openDiskIo(s.volume.descriptor());
    io.write(0, Buffer.from('hello'));
    io.close();
    expect(io.refresh()).toBe(false);
    expect(codeOf(() => io.readInto(0, 5, Buffer.alloc(5)))).toBe('LOCKED');
    expect(codeOf(() => io.write(0, Buffer.from('x')))).toBe('LOCKED');
    await s.volume.close();
    keyring.wipe(s.ref);
  });

  it('counts foreground requests of every thread for the converter', async () => {
    const s = await setup({ dataSize: 16 * 1024 });
    const io = openDiskIo(s.volume.descriptor());
    const f0 = s.volume.foreground();
    io.write(0, Buffer.alloc(100, 1));
    await s.volume.write(100, Buffer.alloc(100, 2));
    io.readInto(0, 200, Buffer.alloc(200));
    await s.volume.fsync(true);
    const f1 = s.volume.foreground();
    expect(f1.completed - f0.completed).toBe(4);
    expect(f1.busyNs).toBeGreaterThan(f0.busyNs);
    expect(f1.inFlight).toBe(0);
    expect(s.volume.counters).toMatchObject({ bytesWritten: 200, bytesRead: 200, writeOps: 2, readOps: 1 });
    io.close();
    await s.volume.close();
    keyring.wipe(s.ref);
  });

  it('worker threads, the main-thread Volume and a converter-style exclusive rewrite agree byte for byte with a model', async () => {
    const size = 256 * 1024;
    const seg = 100; // writers own 100-byte segments: they share every 512-byte sector (read-modify-write)
    const writers = 4; // three workers plus the main thread
    const s = await setup({ dataSize: size, sectorSize: 512 });
    const init = randomBytes(size);
    await s.volume.write(0, init);
    const d = s.volume.descriptor();
    const workers = [0, 1, 2].map((id) =>
      runWorker({ kind: 'writer', descriptor: d, id, writers, seg, ops: 1500, seed: 1000 + id }),
    );
    const model = Buffer.from(init);
    let stop = false;
    // the converter's way: exclusive range, raw read, decrypt, encrypt, raw write through its own fd
    const converter = (async () => {
      const c = new XtsCipher(s.key);
      const { open } = await import('node:fs/promises');
      const fh = await open(s.image, 'r+');
      let batches = 0;
      try {
        while (!stop) {
          const start = randomInt(0, size / 8192) * 8192;
          const release = await s.volume.lockRange(start, start + 8192);
          try {
            const buf = Buffer.alloc(8192);
            await fh.read(buf, 0, 8192, s.dataOffset + start);
            c.decryptInPlace(buf, 512, start / 512 + s.ivTweak);
            await new Promise((r) => setTimeout(r, 2));
            c.encryptInPlace(buf, 512, start / 512 + s.ivTweak);
            await fh.write(buf, 0, 8192, s.dataOffset + start);
            batches++;
          } finally {
            release();
          }
          await new Promise((r) => setTimeout(r, 1));
        }
      } finally {
        await fh.close();
        c.wipe();
      }
      return batches;
    })();
    // the main thread is writer 3
    const segs = Math.floor(size / seg);
    for (let i = 0; i < 600; i++) {
      let sg = randomInt(0, segs);
      sg -= sg % writers;
      sg += 3;
      if (sg >= segs) continue;
      const from = sg * seg + randomInt(0, seg);
      const to = from + 1 + randomInt(0, sg * seg + seg - from);
      const data = randomBytes(to - from);
      await s.volume.write(from, data);
      data.copy(model, from);
      if (i % 3 === 0) expect((await s.volume.read(from, to - from)).equals(data)).toBe(true);
    }
    const replies = await Promise.all(workers);
    stop = true;
    expect(await converter).toBeGreaterThan(0);
    for (const [id, r] of replies.entries()) {
      if (!r.ok) throw new Error(`worker ${id}: ${r.code} ${r.message}`);
      expect(r.mismatches).toBe(0);
      const m = Buffer.from(r.model ?? new Uint8Array(0));
      for (let sg = id; sg < segs; sg += writers) m.copy(model, sg * seg, sg * seg, sg * seg + seg);
    }
    const all = await s.volume.read(0, size);
    let bad = 0;
    for (let i = 0; i < size; i++) if (all[i] !== model[i]) bad++;
    expect(bad).toBe(0);
    await s.volume.close();
    keyring.wipe(s.ref);
  }, 180_000);
});
