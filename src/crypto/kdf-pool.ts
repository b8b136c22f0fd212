// Where KDFs run: worker threads (never the libuv pool that serves file I/O), a few at a time, each stopped when it outruns the time budget.
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { AtrestError } from '../errors/index.js';
import { kdfBudget, overBudget } from './kdf-limits.js';
import type { KdfTask } from './kdf-worker.js';
import { workerModule } from './worker-module.js';

/** KDFs that run at once (each takes one core); more wait in line. */
export const KDF_CONCURRENCY = 2;
/** KDFs that may wait for a thread; beyond that they are refused (a flood of unlocks cannot pile up). */
export const KDF_QUEUE_MAX = 32;

/** Longest a KDF thread may take to start before its derivation's budget begins. */
const START_CAP_MS = 30_000;

let shared: Piscina | null = null;
let running = 0;
const waiting: Array<() => void> = [];

/** PBKDF2 threads stay a few seconds for the next unlock; Argon2 gets a thread of its own (its GiBs go with it). */
function sharedPool(): Piscina {
  shared ??= new Piscina({
    ...workerModule('kdf-worker'),
    minThreads: 0,
    maxThreads: KDF_CONCURRENCY,
    idleTimeout: 5_000,
  });
  return shared;
}

async function slot(): Promise<() => void> {
  if (running >= KDF_CONCURRENCY) {
    if (waiting.length >= KDF_QUEUE_MAX) {
      throw new AtrestError(
        'KDF_BUDGET',
        `too many key derivations waiting (${waiting.length}); refusing another`,
        {
          hint: 'try again when the running unlocks have finished',
        },
      );
    }
    await new Promise<void>((resolve) => waiting.push(resolve));
  } else {
    running++;
  }
  let done = false;
  return () => {
    if (done) return;
    done = true;
    const next = waiting.shift();
    if (next) next();
    else running--;
  };
}

/**
 * Runs `task` in a KDF worker thread when one of KDF_CONCURRENCY is free; the time budget starts then
 * and, when it runs out, the thread is stopped and the call fails with KDF_BUDGET. `what` names the
 * derivation in messages (e.g. "PBKDF2-sha256 with 2147483647 iterations").
 */
export async function runKdfTask(task: KdfTask, what: string): Promise<unknown> {
  const release = await slot();
  const { maxSeconds } = kdfBudget();
  const ownPool = task.kind !== 'pbkdf2';
  const pool = ownPool
    ? new Piscina({ ...workerModule('kdf-worker'), minThreads: 0, maxThreads: 1 })
    : sharedPool();
  const abort = new AbortController();
  let timedOut = false;
  const stop = (): void => {
    timedOut = true;
    abort.abort();
  };
  // the budget runs from the moment the worker starts the derivation (thread start-up is not counted,
  // but is capped too)
  const { port1, port2 } = new MessageChannel();
  let timer = setTimeout(stop, START_CAP_MS + maxSeconds * 1000);
  port1.once('message', () => {
    clearTimeout(timer);
    timer = setTimeout(stop, maxSeconds * 1000);
  });
  try {
    return await pool.run(
      { ...task, started: port2 },
      { transferList: [task.password.buffer as ArrayBuffer, port2], signal: abort.signal },
    );
  } catch (err) {
    if (timedOut)
      throw overBudget(`${what} ran longer than the KDF time budget of ${maxSeconds} s and was stopped`);
    throw new AtrestError('INTERNAL', `${what} failed`, { cause: err });
  } finally {
    clearTimeout(timer);
    port1.close();
    // normally transferred (detached here) and zeroed by the worker
    if (task.password.buffer.byteLength > 0) task.password.fill(0);
    if (ownPool) await pool.destroy();
    release();
  }
}

/** Stops the shared KDF threads (tests, shutdown). */
export async function closeKdfPool(): Promise<void> {
  const p = shared;
  shared = null;
  await p?.destroy();
}
