// Lock files across processes: one file per lock, holding the owner's pid and start time, created atomically, taken over when its owner is gone.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { AtrestError, fromSystemError } from '../errors/index.js';

export interface HeldLockFile {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

/** Why a lock could not be taken: a live holder, a creator still writing it, or a race lost. */
export type LockBusy =
  { kind: 'held'; pid: number } | { kind: 'being-created' } | { kind: 'raced' } | { kind: 'contended' };

interface Holder {
  pid: number;
  /** Process start time, clock ticks since boot (/proc/PID/stat field 22); tells pid reuse apart. */
  start: string;
  /** Random, so release() only removes the lock this call made. */
  token: string;
  /** What the lock is for (a path), for people reading the file. */
  image: string;
}

/** How old an unreadable lock file must be before it counts as abandoned (a creator died mid-write). */
const UNREADABLE_GRACE_MS = 5_000;
const ATTEMPTS = 5;

/** The start time of process `pid` (field 22 of /proc/PID/stat), or null if it does not exist. */
export async function processStartTime(pid: number): Promise<string | null> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: fields after the last ')' start at field 3
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return rest[22 - 3] ?? null;
  } catch {
    return null;
  }
}

function parseHolder(text: string): Holder | null {
  try {
    const h = JSON.parse(text) as Partial<Holder>;
    if (typeof h.pid === 'number' && typeof h.start === 'string' && typeof h.token === 'string') {
      return {
        pid: h.pid,
        start: h.start,
        token: h.token,
        image: typeof h.image === 'string' ? h.image : '',
      };
    }
  } catch {
    /* unreadable */
  }
  return null;
}

/** True when the holder process still runs (same pid and same start time). */
async function holderAlive(h: Holder): Promise<boolean> {
  return (await processStartTime(h.pid)) === h.start;
}

/**
 * Takes the lock file `lockPath` (its directory is made 0700 if missing), recording `what` in it. The
 * file is written whole under a temporary name, then hard-linked into place (atomic, fails if present).
 * A lock whose process is gone (or whose pid now belongs to another process) is taken over: it is
 * renamed aside (atomic, one winner) and checked to be the very file judged stale before it is dropped.
 * Returns the held lock, or why it is busy (never waits).
 */
export async function tryLockFile(lockPath: string, what: string): Promise<HeldLockFile | LockBusy> {
  await mkdir(lockPath.slice(0, lockPath.lastIndexOf('/')) || '/', { recursive: true, mode: 0o700 });
  const start = await processStartTime(process.pid);
  if (start === null) throw new AtrestError('INTERNAL', 'cannot read /proc/self/stat');
  const me: Holder = { pid: process.pid, start, token: randomBytes(12).toString('hex'), image: what };
  const tmp = `${lockPath}.${me.token}.tmp`;
  await writeFile(tmp, JSON.stringify(me) + '\n', { mode: 0o600, flag: 'wx' });
  try {
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      try {
        await link(tmp, lockPath);
        return makeLock(lockPath, me);
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'EEXIST') throw fromSystemError(err, lockPath, 'lock file');
      }
      const busy = await takeOverIfStale(lockPath);
      if (busy !== null) return busy;
    }
    return { kind: 'contended' };
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Why the current lock is busy; or null after moving a stale one out of the way (or it went away). */
async function takeOverIfStale(lockPath: string): Promise<LockBusy | null> {
  let text: string;
  let before;
  try {
    before = await stat(lockPath);
    text = await readFile(lockPath, 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return null; // released meanwhile: retry
    throw fromSystemError(err, lockPath, 'lock file');
  }
  const holder = parseHolder(text);
  if (holder !== null && (await holderAlive(holder))) return { kind: 'held', pid: holder.pid };
  if (holder === null && Date.now() - before.mtimeMs < UNREADABLE_GRACE_MS) return { kind: 'being-created' };
  const aside = `${lockPath}.stale.${randomBytes(6).toString('hex')}`;
  try {
    await rename(lockPath, aside);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return null;
    throw fromSystemError(err, lockPath, 'lock file');
  }
  const moved = await stat(aside);
  if (moved.ino !== before.ino) {
    // another process replaced the stale lock with its live one between our read and rename: put it back
    await link(aside, lockPath).catch(() => undefined);
    await unlink(aside).catch(() => undefined);
    return { kind: 'raced' };
  }
  await unlink(aside).catch(() => undefined);
  return null;
}

function makeLock(lockPath: string, me: Holder): HeldLockFile {
  let released = false;
  return {
    path: lockPath,
    async release(): Promise<void> {
      if (released) return;
      released = true;
      try {
        const holder = parseHolder(await readFile(lockPath, 'utf8'));
        if (holder?.token === me.token) await unlink(lockPath);
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'ENOENT') throw fromSystemError(err, lockPath, 'lock file');
      }
    },
  };
}

/** True for a tryLockFile result that is a held lock. */
export function isHeld(r: HeldLockFile | LockBusy): r is HeldLockFile {
  return 'release' in r;
}
