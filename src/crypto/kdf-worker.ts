// A one-shot worker thread for Argon2, so seconds of hashing never block the daemon's event loop.
import { argon2i, argon2id } from 'hash-wasm';
import type { TaskError } from './protocol.js';

export interface Argon2Task {
  type: 'argon2i' | 'argon2id';
  password: Uint8Array;
  salt: Uint8Array;
  iterations: number;
  parallelism: number;
  memorySize: number;
  hashLength: number;
}

/** Returns the derived key, or a TaskError; never throws across the thread boundary. */
export default async function run(task: Argon2Task): Promise<Uint8Array | TaskError> {
  try {
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
      message: `${task.type} failed: ${err instanceof Error ? err.message : String(err)}`,
    };
  } finally {
    task.password.fill(0);
  }
}
