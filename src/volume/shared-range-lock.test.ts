import { describe, expect, it } from 'vitest';
import { LOCK_ENTRIES, SharedRangeLock } from './shared-range-lock.js';
import { runWorker } from './worker-spawn.test-helper.js';

/** Whether `p` settles within a few event-loop turns (a granted lock resolves at once). */
async function settlesSoon(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 5));
  return done;
}

describe('SharedRangeLock', () => {
  it('shares reads, excludes writes over overlapping ranges, ignores disjoint ones', async () => {
    const lock = new SharedRangeLock();
    const r1 = await lock.acquireAsync(0, 100, false);
    const r2 = await lock.acquireAsync(50, 150, false);
    const w = lock.acquireAsync(90, 120, true);
    expect(await settlesSoon(w)).toBe(false);
    expect(await settlesSoon(lock.acquireAsync(200, 300, true))).toBe(true);
    lock.release(r1);
    expect(await settlesSoon(w)).toBe(false);
    lock.release(r2);
    expect(await settlesSoon(w)).toBe(true);
    expect(lock.stats()).toEqual({ held: 2, waiting: 0 });
  });

  it('is fair: a reader arriving after a waiting writer waits behind it (and a writer behind a waiting reader)', async () => {
    const lock = new SharedRangeLock();
    const r1 = await lock.acquireAsync(0, 10, false);
    const order: string[] = [];
    const w = lock.acquireAsync(0, 10, true).then((h) => {
      order.push('writer');
      return h;
    });
    await settlesSoon(w);
    const r2 = lock.acquireAsync(5, 6, false).then((h) => {
      order.push('reader');
      return h;
    });
    // r2 overlaps only the held reader (shared) but arrived after the writer: it must not pass it
    expect(await settlesSoon(r2)).toBe(false);
    lock.release(r1);
    const wh = await w;
    expect(await settlesSoon(r2)).toBe(false);
    const w2 = lock.acquireAsync(0, 10, true).then((h) => {
      order.push('writer2');
      return h;
    });
    lock.release(wh);
    const rh = await r2;
    expect(await settlesSoon(w2)).toBe(false);
    lock.release(rh);
    lock.release(await w2);
    expect(order).toEqual(['writer', 'reader', 'writer2']);
    expect(lock.stats()).toEqual({ held: 0, waiting: 0 });
  });

  it('waits for a free entry when the table is full', async () => {
    const lock = new SharedRangeLock();
    const held: number[] = [];
    for (let i = 0; i < LOCK_ENTRIES; i++) held.push(await lock.acquireAsync(i * 10, i * 10 + 10, true));
    const more = lock.acquireAsync(1_000_000, 1_000_001, true);
    expect(await settlesSoon(more)).toBe(false);
    lock.release(held.pop() ?? -1);
    expect(await settlesSoon(more)).toBe(true);
  });

  it('refuses empty ranges and releasing what is not held', async () => {
    const lock = new SharedRangeLock();
    expect(() => lock.acquireSync(5, 5, true)).toThrow(RangeError);
    const h = await lock.acquireAsync(0, 1, true);
    lock.release(h);
    expect(() => lock.release(h)).toThrow(RangeError);
  });

  it('excludes across real worker threads and the main thread (no lost update), mixing sync and async', async () => {
    const lock = new SharedRangeLock();
    // per-unit counters 0..10 (a start barrier at 14, a scratch word at 15): each op adds 1 to the 4 units its range covers
    const counter = new SharedArrayBuffer(16 * 8);
    const c = new Float64Array(counter);
    const ops = 3000;
    const workers = [1, 2, 3].map((seed) =>
      runWorker({ kind: 'counter', locks: lock.buffer, counter, ops, seed, unlocked: false, parties: 3 }),
    );
    // the main thread takes the same ranges asynchronously in between, holding them across an await
    let mainOps = 0;
    for (let i = 0; i < 300; i++) {
      const start = i % 8;
      const h = await lock.acquireAsync(start, start + 4, true);
      const v = Array.from(c.subarray(start, start + 4));
      await new Promise((r) => setImmediate(r));
      for (let k = 0; k < 4; k++) c[start + k] = (v[k] ?? 0) + 1;
      lock.release(h);
      mainOps++;
    }
    const replies = await Promise.all(workers);
    for (const r of replies) expect(r).toEqual({ ok: true });
    let sum = 0;
    for (let k = 0; k < 11; k++) sum += c[k] ?? 0;
    expect(sum).toBe(4 * (3 * ops + mainOps));
    expect(lock.stats()).toEqual({ held: 0, waiting: 0 });
  }, 120_000);
});
