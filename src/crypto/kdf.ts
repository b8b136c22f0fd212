// Key derivation for LUKS2 keyslots: PBKDF2 (node:crypto) and Argon2i/Argon2id (hash-wasm) in KDF worker threads within limits and budget (kdf-limits.ts), and a PBKDF2 iteration benchmark.
import { Buffer } from 'node:buffer';
import { getHashes, pbkdf2 as pbkdf2Callback, randomBytes } from 'node:crypto';
import { AtrestError, isErrorCode } from '../errors/index.js';
import {
  ARGON2_MAX_MEMORY_KIB,
  ARGON2_MAX_PARALLEL,
  ARGON2_MIN_PARALLEL,
  KDF_MAX_ITERATIONS,
  kdfBudget,
  overBudget,
  PBKDF2_MIN_ITERATIONS,
} from './kdf-limits.js';
import { runKdfTask } from './kdf-pool.js';
import type { Argon2Task, Pbkdf2Task } from './kdf-worker.js';

export { PBKDF2_MIN_ITERATIONS };

export type Pbkdf2Hash = 'sha256' | 'sha512' | 'sha1';
export type Argon2Type = 'argon2i' | 'argon2id';

export interface Argon2Params {
  timeCost: number;
  memoryKiB: number;
  parallelism: number;
  keyLength: number;
}

/**
 * PBKDF2 runs up to this many iterations (a few milliseconds: digests, key slots bound to a KEK) go
 * straight to node:crypto; longer ones to a KDF worker thread within the time budget.
 */
export const PBKDF2_INLINE_MAX_ITERATIONS = 10_000;

/** Argon2 in WebAssembly is limited by 32-bit memory: a little under cryptsetup's 4 GiB ceiling. */
const WASM_MAX_MEMORY_KIB = ARGON2_MAX_MEMORY_KIB - 64;

function checkInt(name: string, v: unknown, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new AtrestError('USAGE', `${name} must be an integer from ${min} to ${max}`);
  }
}

function checkBytes(name: string, v: unknown): void {
  if (!(v instanceof Uint8Array)) throw new AtrestError('USAGE', `${name} must be a Buffer or Uint8Array`);
}

/** The worker's reply as a key of `keyLength` bytes, or the TaskError it sent as an AtrestError. */
function keyFrom(reply: unknown, keyLength: number, what: string): Buffer {
  if (reply instanceof Uint8Array && reply.length === keyLength) {
    const key = Buffer.from(reply);
    reply.fill(0);
    return key;
  }
  const e = reply as Partial<{ code: string; message: string }> | null;
  throw new AtrestError(
    e && typeof e.code === 'string' && isErrorCode(e.code) ? e.code : 'INTERNAL',
    e && typeof e.message === 'string' ? e.message : `${what} failed`,
  );
}

function pbkdf2Task(
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  keyLength: number,
  hash: string,
): Pbkdf2Task {
  checkBytes('password', password);
  checkBytes('salt', salt);
  checkInt('PBKDF2 iterations', iterations, 1, KDF_MAX_ITERATIONS);
  checkInt('PBKDF2 key length', keyLength, 1, 1024);
  if (typeof hash !== 'string' || !getHashes().includes(hash)) {
    throw new AtrestError('UNSUPPORTED', `PBKDF2 hash ${String(hash)} is not supported`);
  }
  return {
    kind: 'pbkdf2',
    password: Uint8Array.from(password),
    salt: Uint8Array.from(salt),
    iterations,
    keyLength,
    hash,
  };
}

/**
 * PBKDF2 (RFC 8018) with any hash node:crypto has, in a KDF worker thread (never the libuv pool that
 * serves file I/O), within the KDF time budget (KDF_BUDGET when it runs out).
 */
export async function pbkdf2Any(
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  keyLength: number,
  hash: string,
): Promise<Buffer> {
  const task = pbkdf2Task(password, salt, iterations, keyLength, hash);
  if (iterations <= PBKDF2_INLINE_MAX_ITERATIONS) {
    // milliseconds of work (digests, bound key slots): not worth a thread hop; bounded, so harmless
    // to the libuv pool
    try {
      return await new Promise<Buffer>((resolve, reject) => {
        pbkdf2Callback(task.password, task.salt, iterations, keyLength, hash, (err, key) => {
          if (err) reject(new AtrestError('INTERNAL', 'PBKDF2 failed', { cause: err }));
          else resolve(key);
        });
      });
    } finally {
      task.password.fill(0);
    }
  }
  const what = `PBKDF2-${hash} with ${iterations} iterations`;
  return keyFrom(await runKdfTask(task, what), keyLength, what);
}

/** PBKDF2 (RFC 8018) with SHA-1/256/512: pbkdf2Any restricted to the hashes atrest writes. */
export async function pbkdf2(
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  keyLength: number,
  hash: Pbkdf2Hash,
): Promise<Buffer> {
  if (!(['sha256', 'sha512', 'sha1'] as readonly string[]).includes(hash)) {
    throw new AtrestError('UNSUPPORTED', `PBKDF2 hash ${String(hash)} is not supported`);
  }
  return pbkdf2Any(password, salt, iterations, keyLength, hash);
}

/**
 * Argon2i / Argon2id (RFC 9106, version 0x13) through hash-wasm, in a worker thread of its own (its
 * memory goes with it), within the KDF budget: more memory than the budget allows is refused before it
 * runs, a run past the time budget is stopped (KDF_BUDGET). Lanes are computed one after another.
 */
export async function argon2(
  type: Argon2Type,
  password: Uint8Array,
  salt: Uint8Array,
  params: Argon2Params,
): Promise<Buffer> {
  checkBytes('password', password);
  checkBytes('salt', salt);
  if (type !== 'argon2i' && type !== 'argon2id') {
    throw new AtrestError('UNSUPPORTED', `Argon2 variant ${String(type)} is not supported`);
  }
  if (typeof params !== 'object' || params === null)
    throw new AtrestError('USAGE', 'Argon2 needs parameters');
  const { timeCost, memoryKiB, parallelism, keyLength } = params;
  checkInt('Argon2 time cost', timeCost, 1, KDF_MAX_ITERATIONS);
  checkInt('Argon2 parallelism', parallelism, ARGON2_MIN_PARALLEL, ARGON2_MAX_PARALLEL);
  checkInt('Argon2 memory (KiB)', memoryKiB, 8 * parallelism, WASM_MAX_MEMORY_KIB);
  checkInt('Argon2 key length', keyLength, 4, 1024);
  if (salt.length < 8) throw new AtrestError('USAGE', 'Argon2 salt must be at least 8 bytes');
  const what = `${type} with ${memoryKiB} KiB, time cost ${timeCost}, parallelism ${parallelism}`;
  const { maxMemoryKiB } = kdfBudget();
  if (memoryKiB > maxMemoryKiB) {
    throw overBudget(`${what} needs more memory than the KDF budget of ${maxMemoryKiB} KiB`);
  }
  const task: Argon2Task = {
    kind: 'argon2',
    type,
    password: Uint8Array.from(password),
    salt: Uint8Array.from(salt),
    iterations: timeCost,
    parallelism,
    memorySize: memoryKiB,
    hashLength: keyLength,
  };
  return keyFrom(await runKdfTask(task, what), keyLength, what);
}

/**
 * PBKDF2 iterations that take about `targetMs` here, cryptsetup-style: time a short run (doubling it
 * until it lasts long enough to measure) and scale. Never below 1000.
 */
export async function benchmarkPbkdf2Iterations(
  hash: Pbkdf2Hash,
  keyLength: number,
  targetMs = 1000,
): Promise<number> {
  if (typeof targetMs !== 'number' || !Number.isFinite(targetMs) || targetMs <= 0) {
    throw new AtrestError('USAGE', 'PBKDF2 benchmark target must be a positive number of milliseconds');
  }
  const password = randomBytes(32);
  const salt = randomBytes(32);
  const minSampleMs = Math.min(100, Math.max(20, targetMs / 10));
  let iterations = PBKDF2_MIN_ITERATIONS;
  try {
    for (;;) {
      // timed in the worker, so waiting for a thread does not count
      const ms = await runKdfTask(
        { ...pbkdf2Task(password, salt, iterations, keyLength, hash), timeOnly: true },
        `PBKDF2-${hash} benchmark`,
      );
      if (typeof ms !== 'number') throw new AtrestError('INTERNAL', 'PBKDF2 benchmark failed');
      if (ms >= minSampleMs || iterations >= 0x2000_0000) {
        const scaled = Math.floor((iterations * targetMs) / Math.max(ms, 0.001));
        return Math.min(KDF_MAX_ITERATIONS, Math.max(PBKDF2_MIN_ITERATIONS, scaled));
      }
      iterations *= ms > 0 ? Math.min(16, Math.max(2, Math.ceil(minSampleMs / ms))) : 16;
    }
  } finally {
    password.fill(0);
    salt.fill(0);
  }
}
