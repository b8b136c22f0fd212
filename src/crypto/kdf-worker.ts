// KDF worker thread: PBKDF2 (pbkdf2Sync, off the libuv pool), a timed PBKDF2 run for the benchmark, and Argon2 (hash-wasm), so no KDF blocks the event loop or file I/O.
import { pbkdf2Sync } from 'node:crypto';
import type { MessagePort } from 'node:worker_threads';
import type { TaskError } from './protocol.js';

export interface Argon2Task {
  kind?: 'argon2';
  type: 'argon2i' | 'argon2id';
  password: Uint8Array;
  salt: Uint8Array;
  iterations: number;
  parallelism: number;
  memorySize: number;
  hashLength: number;
  /** Told when the derivation starts (the time budget runs from then, not from thread start-up). */
  started?: MessagePort;
}

export interface Pbkdf2Task {
  kind: 'pbkdf2';
  password: Uint8Array;
  salt: Uint8Array;
  iterations: number;
  keyLength: number;
  hash: string;
  /** Return the run's milliseconds (measured here, without queueing) instead of the key. */
  timeOnly?: boolean;
  started?: MessagePort;
}

export type KdfTask = Argon2Task | Pbkdf2Task;

function pbkdf2Run(task: Pbkdf2Task): Uint8Array | number {
  const start = performance.now();
  const key = pbkdf2Sync(task.password, task.salt, task.iterations, task.keyLength, task.hash);
  const ms = performance.now() - start;
  if (!task.timeOnly) return key;
  key.fill(0);
  return ms;
}

/** Returns the derived key (or the time of a timed run), or a TaskError; never throws across the thread boundary. */
export default async function run(task: KdfTask): Promise<Uint8Array | number | TaskError> {
  try {
    task.started?.postMessage('started');
    task.started?.close();
    if (task.kind === 'pbkdf2') return pbkdf2Run(task);
    // loaded only for Argon2: PBKDF2 threads start faster without it
    const { argon2i, argon2id } = await import('hash-wasm');
    const fn = task.type === 'argon2id' ? argon2id : argon2i;
    return await fn({
      password: task.password,
      salt: task.salt,
      iterations: task.iterations,
      parallelism: task.parallelism,
      memorySize: task.memorySize,
      hashLength: task.hashLength,
      outputType: 'binary',
    });
  } catch (err) {
    return {
      code: 'INTERNAL',
      message: `${task.kind === 'pbkdf2' ? 'PBKDF2' : task.type} failed: ${err instanceof Error ? err.message : String(err)}`,
    };
  } finally {
    task.password.fill(0);
  }
}
