import { afterEach, describe, expect, it } from 'vitest';
import { Periodic, SingleFlight, TimeoutError, withTimeout } from './periodic.js';

let task: Periodic | null = null;
afterEach(async () => {
  await task?.stop();
  task = null;
});

async function until(fn: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('Periodic', () => {
  it('schedules the next pass after every kind of pass: returns at once, throws, rejects, hangs', async () => {
    const kinds = ['sync', 'throw', 'sync', 'reject', 'async', 'hang', 'sync', 'throw', 'hang', 'async'];
    const ran: string[] = [];
    const errors: unknown[] = [];
    task = new Periodic(
      () => {
        const kind = kinds[ran.length] ?? 'sync';
        ran.push(kind);
        if (kind === 'throw') throw new Error('pass threw');
        if (kind === 'reject') return Promise.reject(new Error('pass rejected'));
        if (kind === 'async') return new Promise((r) => setTimeout(r, 5));
        if (kind === 'hang') return new Promise<void>(() => undefined);
        return undefined;
      },
      { intervalMs: 5, passTimeoutMs: 100, onError: (err) => errors.push(err) },
    );
    task.start();
    await until(() => ran.length > kinds.length + 2, 'passes after every kind');
    expect(ran.slice(0, kinds.length)).toEqual(kinds);
    expect(errors.filter((e) => e instanceof TimeoutError)).toHaveLength(2);
    expect(errors.filter((e) => (e as Error).message.startsWith('pass '))).toHaveLength(3);
  });

  it('keeps going when the error handler itself throws; stop() ends it', async () => {
    let count = 0;
    task = new Periodic(
      () => {
        count++;
        throw new Error('always');
      },
      {
        intervalMs: 5,
        passTimeoutMs: 100,
        onError: () => {
          throw new Error('logger down');
        },
      },
    );
    task.start();
    task.start(); // idempotent: still one chain of passes
    await until(() => count >= 5, 'five passes');
    await task.stop();
    const stoppedAt = count;
    await new Promise((r) => setTimeout(r, 50));
    expect(count).toBe(stoppedAt);
    expect(task.running).toBe(false);
  });
});

describe('withTimeout and SingleFlight', () => {
  it('bounds a call that never settles, and never starts a hung call twice', async () => {
    const flights = new SingleFlight<number>();
    let started = 0;
    const hang = (): Promise<number> => {
      started++;
      return new Promise<number>(() => undefined);
    };
    await expect(withTimeout(flights.run('k', hang), 20, 'call')).rejects.toBeInstanceOf(TimeoutError);
    await expect(withTimeout(flights.run('k', hang), 20, 'call')).rejects.toBeInstanceOf(TimeoutError);
    expect(started).toBe(1);
    // another key, and a key whose call settled, run again
    await expect(flights.run('other', () => Promise.resolve(7))).resolves.toBe(7);
    await expect(flights.run('other', () => Promise.reject(new Error('no')))).rejects.toThrow('no');
    await expect(flights.run('other', () => Promise.resolve(8))).resolves.toBe(8);
    expect(flights.size).toBe(1);
  });
});
