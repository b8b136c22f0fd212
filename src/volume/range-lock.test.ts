import { describe, expect, it } from 'vitest';
import { RangeLock } from './range-lock.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('RangeLock', () => {
  it('shares overlapping reads and lets disjoint writes run together', async () => {
    const l = new RangeLock();
    const r1 = await l.acquire(0, 10, false);
    const r2 = await l.acquire(5, 15, false);
    const w1 = await l.acquire(20, 30, true);
    const w2 = await l.acquire(30, 40, true);
    expect(l.held).toBe(4);
    for (const r of [r1, r2, w1, w2]) r();
    expect(l.held).toBe(0);
  });

  it('makes an overlapping writer wait for readers, and readers wait for the writer', async () => {
    const l = new RangeLock();
    const order: string[] = [];
    const r1 = await l.acquire(0, 10, false);
    const w = l.acquire(5, 6, true).then((rel) => {
      order.push('w');
      return rel;
    });
    const r2 = l.acquire(0, 10, false).then((rel) => {
      order.push('r2');
      return rel;
    });
    await tick();
    expect(order).toEqual([]);
    expect(l.waiting).toBe(2);
    r1();
    const wr = await w;
    await tick();
    expect(order).toEqual(['w']);
    wr();
    (await r2)();
    expect(order).toEqual(['w', 'r2']);
  });

  it('does not starve a writer under a stream of readers', async () => {
    const l = new RangeLock();
    let held = await l.acquire(0, 100, false);
    let writerDone = false;
    const w = l.acquire(50, 51, true).then((rel) => {
      writerDone = true;
      rel();
    });
    // readers keep arriving, each overlapping the previous: none may jump the waiting writer
    for (let i = 0; i < 20; i++) {
      const next = l.acquire(0, 100, false);
      held();
      await tick();
      held = await next;
      if (writerDone) break;
    }
    held();
    await w;
    expect(writerDone).toBe(true);
  });

  it('grants in arrival order among conflicting writers, independent ranges skip the queue', async () => {
    const l = new RangeLock();
    const order: number[] = [];
    const first = await l.acquire(0, 8, true);
    const waits = [1, 2, 3].map((i) =>
      l.acquire(0, 8, true).then((rel) => {
        order.push(i);
        rel();
      }),
    );
    const other = await l.acquire(8, 16, true); // disjoint: granted at once
    other();
    expect(order).toEqual([]);
    first();
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
  });

  it('release is idempotent and rejects empty ranges', async () => {
    const l = new RangeLock();
    const r = await l.acquire(0, 1, true);
    r();
    r();
    expect(l.held).toBe(0);
    expect(() => l.acquire(3, 3, true)).toThrow(RangeError);
  });
});
