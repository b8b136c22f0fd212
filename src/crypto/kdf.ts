// Key derivation for LUKS2 keyslots: PBKDF2 (node:crypto), Argon2i/Argon2id (hash-wasm), and a PBKDF2 iteration benchmark.
import { Buffer } from 'node:buffer';
import { pbkdf2 as pbkdf2Callback, randomBytes } from 'node:crypto';
import { Piscina } from 'piscina';
import { AtrestError, isErrorCode } from '../errors/index.js';
import type { Argon2Task } from './kdf-worker.js';
import { workerModule } from './worker-module.js';

export type Pbkdf2Hash = 'sha256' | 'sha512' | 'sha1';
export type Argon2Type = 'argon2i' | 'argon2id';

export interface Argon2Params {
  timeCost: number;
  memoryKiB: number;
  parallelism: number;
  keyLength: number;
}

const PBKDF2_HASHES: readonly string[] = ['sha256', 'sha512', 'sha1'];
/** cryptsetup's floor for PBKDF2 iterations. */
export const PBKDF2_MIN_ITERATIONS = 1000;
/** Argon2 in WebAssembly is limited by 32-bit memory; cryptsetup's own ceiling is 4 GiB as well. */
const ARGON2_MAX_MEMORY_KIB = 4 * 1024 * 1024 - 64;

function checkInt(name: string, v: unknown, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new AtrestError('USAGE', `${name} must be an integer from ${min} to ${max}`);
  }
}

function checkBytes(name: string, v: unknown): void {
  if (!(v instanceof Uint8Array)) throw new AtrestError('USAGE', `${name} must be a Buffer or Uint8Array`);
}

/** PBKDF2 (RFC 8018) with node:crypto on the libuv thread pool. */
export async function pbkdf2(
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  keyLength: number,
  hash: Pbkdf2Hash,
): Promise<Buffer> {
  checkBytes('password', password);
  checkBytes('salt', salt);
  checkInt('PBKDF2 iterations', iterations, 1, 0xffff_ffff);
  checkInt('PBKDF2 key length', keyLength, 1, 1024);
  if (!PBKDF2_HASHES.includes(hash)) {
    throw new AtrestError('UNSUPPORTED', `PBKDF2 hash ${String(hash)} is not supported`);
  }
  return new Promise<Buffer>((resolve, reject) => {
    pbkdf2Callback(password, salt, iterations, keyLength, hash, (err, key) => {
      if (err) reject(new AtrestError('INTERNAL', 'PBKDF2 failed', { cause: err }));
      else resolve(key);
    });
  });
}

/**
 * Argon2i / Argon2id (RFC 9106, version 0x13) through hash-wasm, in a worker thread of its own so the
 * event loop stays free. Handles cryptsetup's defaults (1 GiB, parallelism 4); lanes are computed one
 * after another, so time grows with parallelism.
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
  checkInt('Argon2 time cost', timeCost, 1, 0xffff_ffff);
  checkInt('Argon2 parallelism', parallelism, 1, 0xff_ffff);
  checkInt('Argon2 memory (KiB)', memoryKiB, 8 * parallelism, ARGON2_MAX_MEMORY_KIB);
  checkInt('Argon2 key length', keyLength, 4, 1024);
  if (salt.length < 8) throw new AtrestError('USAGE', 'Argon2 salt must be at least 8 bytes');
  const task: Argon2Task = {
    type,
    password: Uint8Array.from(password),
    salt: Uint8Array.from(salt),
    iterations: timeCost,
    parallelism,
    memorySize: memoryKiB,
    hashLength: keyLength,
  };
  // a worker of its own: the wasm memory (up to GiBs) goes away with the thread
  const pool = new Piscina({ ...workerModule('kdf-worker'), minThreads: 0, maxThreads: 1 });
  let reply: unknown;
  try {
    reply = await pool.run(task, { transferList: [task.password.buffer as ArrayBuffer] });
  } catch (err) {
    throw new AtrestError('INTERNAL', `${type} failed`, { cause: err });
  } finally {
    // normally transferred (detached here) and zeroed by the worker
    if (task.password.buffer.byteLength > 0) task.password.fill(0);
    await pool.destroy();
  }
  if (reply instanceof Uint8Array && reply.length === keyLength) {
    const key = Buffer.from(reply);
    reply.fill(0);
    return key;
  }
  const e = reply as Partial<{ code: string; message: string }> | null;
  throw new AtrestError(
    e && typeof e.code === 'string' && isErrorCode(e.code) ? e.code : 'INTERNAL',
    e && typeof e.message === 'string' ? e.message : `${type} failed`,
  );
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
      const start = performance.now();
      (await pbkdf2(password, salt, iterations, keyLength, hash)).fill(0);
      const ms = performance.now() - start;
      if (ms >= minSampleMs || iterations >= 0x4000_0000) {
        const scaled = Math.floor((iterations * targetMs) / Math.max(ms, 0.001));
        return Math.min(0xffff_ffff, Math.max(PBKDF2_MIN_ITERATIONS, scaled));
      }
      iterations *= ms > 0 ? Math.min(16, Math.max(2, Math.ceil(minSampleMs / ms))) : 16;
    }
  } finally {
    password.fill(0);
    salt.fill(0);
  }
}
