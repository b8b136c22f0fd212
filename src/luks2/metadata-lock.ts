// The metadata lock: one exclusive lock per LUKS2 header file (by st_dev:st_ino), across processes and the daemon, held around every header read-modify-write.
import { AsyncLocalStorage } from 'node:async_hooks';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { envSet } from '../errors/env.js';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { isHeld, tryLockFile } from './lock-file.js';

/** How long a header change waits for another one before giving up (they take seconds: one KDF run). */
export const METADATA_LOCK_WAIT_MS = 120_000;

let configuredDir: string | null = null;

/**
 * Where metadata locks live: the state directory's `locks` (the image locks' directory), i.e.
 * $ATREST_STATE_DIR/locks, default /run/atrestd/locks (for a non-root process without
 * ATREST_STATE_DIR, which cannot change root's images anyway: a per-user directory in the temp
 * directory); setMetadataLockDir overrides it (tests).
 */
export function metadataLockDir(): string {
  if (configuredDir !== null) return configuredDir;
  const state = envSet('ATREST_STATE_DIR');
  if (state) return join(state, 'locks');
  const uid = process.getuid?.() ?? 0;
  return uid === 0 ? '/run/atrestd/locks' : join(tmpdir(), `atrest-locks-${uid}`);
}

export function setMetadataLockDir(dir: string | null): void {
  configuredDir = dir;
}

/** Lock keys this async call chain holds: nested header changes of the same header run straight on. */
const held = new AsyncLocalStorage<ReadonlySet<string>>();

async function lockKey(headerPath: string): Promise<string> {
  try {
    const st = await stat(headerPath);
    return `${st.dev}-${st.ino}`;
  } catch (err) {
    throw fromSystemError(err, headerPath, 'LUKS2 header');
  }
}

/**
 * Runs `fn` holding the exclusive metadata lock of `headerPath`: a lock file `DEV-INO.meta.lock` in
 * metadataLockDir(), so every path to the same header (attached or detached) maps to one lock, and
 * atrest commands and the daemon exclude each other. Waits (polling) while another holds it, up to
 * `opts.waitMs`; a lock left by a dead process is taken over. Re-entrant within one call chain.
 * `fn` must re-read the header and must not wait for a user.
 */
export async function withMetadataLock<T>(
  headerPath: string,
  fn: () => Promise<T>,
  opts: { waitMs?: number } = {},
): Promise<T> {
  const key = await lockKey(headerPath);
  const mine = held.getStore();
  if (mine?.has(key)) return fn();
  const lockPath = join(metadataLockDir(), `${key}.meta.lock`);
  const deadline = Date.now() + (opts.waitMs ?? METADATA_LOCK_WAIT_MS);
  let delay = 10;
  let holder: number | null = null;
  for (;;) {
    const r = await tryLockFile(lockPath, headerPath);
    if (isHeld(r)) {
      try {
        return await held.run(new Set([...(mine ?? []), key]), fn);
      } finally {
        await r.release();
      }
    }
    if (r.kind === 'held') holder = r.pid;
    if (Date.now() >= deadline) {
      throw new AtrestError(
        'IMAGE_BUSY',
        `${headerPath}: another atrest ${holder === null ? 'process' : `process (pid ${holder})`} is changing its LUKS2 header`,
        { path: headerPath, hint: 'try again when it has finished' },
      );
    }
    await sleep(delay);
    delay = Math.min(200, delay * 2);
  }
}
