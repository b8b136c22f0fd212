import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatLuks2, readLuks2 } from '../../luks2/index.js';
import { RangeLock } from '../range-lock.js';
import { Volume } from '../volume.js';
import { BATCH, Killed, lcg, sha, useConvertFixture } from './convert.test-helper.js';
import type { ConversionHost } from './converter.js';
import { startEncrypt } from './plan.js';
import { sidecarPath } from './sidecar.js';

const fx = useConvertFixture();
const { keyRef, plainImage, makeHeader, start, converter, resume, view } = fx;

describe('in-place encryption', () => {
  it('attached header: the image grows by 16 MiB, is standard LUKS2 and decrypts to the original', async () => {
    const { path, data } = await plainImage(5 * BATCH + 4096);
    const { header, plan } = await startEncrypt(path, { sectorSize: 4096, batch: BATCH, makeHeader });
    expect(header).toBe(sidecarPath(path));
    expect(plan.resilience).toBe('datashift');
    const seen: number[] = [];
    const c = converter(path, { header, plan }, { onProgress: (p) => seen.push(p.percent) });
    expect(await c.run()).toBe(true);
    expect(seen.at(-1)).toBe(100);
    expect((await stat(path)).size).toBe(16 * 1024 * 1024 + data.length);
    await expect(stat(header)).rejects.toMatchObject({ code: 'ENOENT' });
    const meta = await readLuks2(path);
    expect(meta.dataOffset).toBe(16 * 1024 * 1024);
    expect(meta.tokens).toEqual([]);
    expect(sha(await view(path))).toBe(sha(data));
    // no plaintext left anywhere in the image
    const raw = await readFile(path);
    expect(raw.includes(data.subarray(0, 64))).toBe(false);
    expect(raw.includes(data.subarray(data.length - 64))).toBe(false);
  });

  it('detached header: ciphertext replaces plaintext at the same offsets (checksum resilience)', async () => {
    const { path, data } = await plainImage(3 * BATCH + 512);
    const hdr = join(fx.dir, 'p.hdr');
    const { plan } = await startEncrypt(path, { header: hdr, sectorSize: 512, batch: BATCH, makeHeader });
    expect(plan.resilience).toBe('checksum');
    await resume(path, hdr);
    expect((await stat(path)).size).toBe(data.length);
    expect(sha(await view(path, hdr))).toBe(sha(data));
  });

  it('refuses LUKS images, sizes that are not whole sectors, and says which sector sizes work', async () => {
    const { path } = await plainImage(4096 + 1024);
    await expect(startEncrypt(path, { sectorSize: 4096, makeHeader })).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringMatching(/not a whole number of 4096-byte sectors/) as unknown,
      hint: expect.stringMatching(/--sector-size 1024/) as unknown,
    });
    const luks = join(fx.dir, 'l.img');
    await formatLuks2({
      imagePath: luks,
      dataSize: 1 << 20,
      passphrase: Buffer.from('x'),
      pbkdf2Iterations: 1000,
    });
    await expect(startEncrypt(luks, { sectorSize: 4096, makeHeader })).rejects.toMatchObject({
      code: 'USAGE',
      hint: expect.stringMatching(/reencrypt/) as unknown,
    });
  });

  const points = [
    'after-grow',
    'sums-written',
    'record-written',
    'after-arm',
    'before-data-write',
    'mid-data-write',
    'after-data-write',
    'after-data-sync',
    'after-checkpoint',
    'after-final-record',
    'header-copied',
    'header-synced',
    'unmarked',
    'sidecar-removed',
  ];
  for (const header of ['attached', 'detached'] as const) {
    for (const point of points) {
      for (const nth of [1, 3]) {
        it(`${header}: a crash at ${point} #${nth} resumes to the exact original`, async () => {
          const { path, data } = await plainImage(4 * BATCH + 4096);
          const hdr = header === 'detached' ? join(fx.dir, 'p.hdr') : undefined;
          const s = await start(path, 4096, hdr);
          let count = 0;
          const c = converter(path, s, {
            killPoint: (name) => {
              if (name === point && ++count === nth) throw new Killed(name);
            },
          });
          await c.run().catch((err: unknown) => {
            if (!(err instanceof Killed)) throw err;
          });
          await resume(path, hdr);
          expect(sha(await view(path, hdr))).toBe(sha(data));
        });
      }
    }
  }
});

describe('online: reads and writes during the conversion', () => {
  for (const header of ['attached', 'detached'] as const) {
    it(`${header}: concurrent random writes and reads land correctly on either side of the front`, async () => {
      const size = 12 * BATCH;
      const { path, data } = await plainImage(size);
      const expected = Buffer.from(data);
      const hdr = header === 'detached' ? join(fx.dir, 'p.hdr') : undefined;
      const s = await start(path, 512, hdr);
      const c = converter(path, s);
      const front = await c.prepare();
      const volume = await Volume.open({
        imagePath: path,
        dataOffset: s.plan.targetOffset,
        dataSize: size,
        sectorSize: 512,
        ivTweak: 0,
        key: keyRef(),
        readOnly: false,
        conversion: { front, sourceOffset: 0, sourceKey: null, sourceIvTweak: 0 },
      });
      c.attach(volume);
      const running = c.run();
      const rand = lcg(42);
      let mismatches = 0;
      for (let i = 0; i < 300; i++) {
        const pos = Math.floor(rand() * (size - 9000));
        const len = 1 + Math.floor(rand() * 9000);
        if (rand() < 0.5) {
          const d = randomBytes(len);
          await volume.write(pos, d);
          d.copy(expected, pos);
        } else {
          await volume.fsync(true);
          const got = await volume.read(pos, len);
          if (!got.equals(expected.subarray(pos, pos + len))) mismatches++;
        }
        if (i % 20 === 0) await new Promise((r) => setImmediate(r));
      }
      expect(mismatches).toBe(0);
      expect(await running).toBe(true);
      expect(volume.conversionFront).toBeNull();
      const all = await volume.read(0, size);
      expect(sha(all)).toBe(sha(expected));
      await volume.fsync(false);
      await volume.close();
      expect(sha(await view(path, hdr))).toBe(sha(expected));
    });
  }
});

/**
 * An online volume whose foreground load runs on a virtual clock: while the converter pauses, 10
 * requests complete per ms at 0.1 ms each; while it holds a batch's range, requests are 8x slower and
 * 8x fewer (a batch takes 20 virtual ms). Records the batch sizes and the pauses the converter takes.
 */
class BusyHost implements ConversionHost {
  readonly locks = new RangeLock();
  t = 0;
  fg = { inFlight: 4, completed: 0, busyNs: 0 };
  readonly batches: number[] = [];
  readonly pauses: number[] = [];
  /** Virtual time at the end of each batch. */
  readonly batchEnds: number[] = [];
  front: number;
  /** A sleep that never ends by itself (stop() must end it). */
  hang = false;

  constructor(size: number) {
    this.front = size;
  }

  #run(ms: number, perMs: number, latNs: number): void {
    const n = Math.round(ms * perMs);
    this.fg = { inFlight: 4, completed: this.fg.completed + n, busyNs: this.fg.busyNs + n * latNs };
    this.t += ms;
  }

  readonly clock = {
    now: (): number => this.t,
    sleep: (ms: number): Promise<void> => {
      this.pauses.push(ms);
      if (this.hang) return new Promise<void>(() => undefined);
      this.#run(ms, 10, 100_000);
      return Promise.resolve();
    },
  };

  foreground(): { inFlight: number; completed: number; busyNs: number } {
    return { ...this.fg };
  }

  async lockRange(first: number, last: number): Promise<() => void> {
    const release = await this.locks.acquire(first, last, true);
    return () => {
      this.#run(20, 10 / 8, 800_000);
      this.batchEnds.push(this.t);
      release();
    };
  }

  setConversionFront(front: number): void {
    if (front < this.front) this.batches.push(this.front - front);
    this.front = front;
  }
}

describe('online: yielding to foreground I/O', () => {
  it('a foreground slowed by the batches gets pauses and small batches; the conversion still finishes', async () => {
    const size = 32 * BATCH;
    const { path, data } = await plainImage(size);
    const s = await start(path, 512);
    const host = new BusyHost(size);
    const c = converter(path, s, { volume: host, clock: host.clock, yieldPolicy: { minBatch: 16384 } });
    expect(await c.run()).toBe(true);
    expect(sha(await view(path))).toBe(sha(data));
    // impact 7/8 against a budget of 0.1: duty ~ 0.11, so ~ 8x the batch time in pauses
    const ends = host.batchEnds;
    expect(ends.length).toBeGreaterThan(15);
    const duty = (20 * (ends.length - 11)) / ((ends.at(-1) ?? 0) - (ends[10] ?? 0));
    expect(duty).toBeLessThan(0.2);
    expect(duty).toBeGreaterThanOrEqual(0.05);
    expect(Math.min(...host.batches)).toBe(16384);
    expect(host.batches.reduce((a, b) => a + b, 0)).toBe(size);
  });

  it('maxRate stays a cap on top: an idle volume converts no faster than it', async () => {
    const size = 16 * BATCH;
    const { path, data } = await plainImage(size);
    const s = await start(path, 512);
    const host = new BusyHost(size);
    host.fg = { inFlight: 0, completed: 0, busyNs: 0 };
    // idle: no foreground at all, and batches take no virtual time
    host.lockRange = async (first, last) => host.locks.acquire(first, last, true);
    host.clock.sleep = (ms: number): Promise<void> => {
      host.pauses.push(ms);
      host.t += ms;
      return Promise.resolve();
    };
    const rate = 4 * BATCH; // bytes per second: 16 batches take 4 s (virtual)
    const c = converter(path, s, { volume: host, clock: host.clock, maxRate: rate });
    expect(await c.run()).toBe(true);
    expect(sha(await view(path))).toBe(sha(data));
    expect(host.batches.every((b) => b === BATCH)).toBe(true);
    expect(host.t).toBeGreaterThanOrEqual(((size - BATCH) * 1000) / rate - 1);
  });

  it('stop() ends a pause between batches at once', async () => {
    const size = 64 * BATCH;
    const { path } = await plainImage(size);
    const s = await start(path, 512);
    const host = new BusyHost(size);
    host.hang = true;
    const c = converter(path, s, { volume: host, clock: host.clock, finalize: false });
    const running = c.run();
    for (let i = 0; i < 200 && host.pauses.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(host.pauses.length).toBe(1);
    c.stop();
    expect(await running).toBe(false);
    expect(c.front).toBeGreaterThan(0);
  });
});
