// Image locks: a lock file per image (named by st_dev:st_ino) so two servers never write the same image.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AtrestError, fromSystemError } from '../errors/index.js';

export interface ImageLock {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  /** Process start time, clock ticks since boot (/proc/PID/stat field 22); tells pid reuse apart. */
  start: string;
  /** Random, so release() only removes the lock this call made. */
  token: string;
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
 * Takes the lock of `imagePath` in `lockDir`: a file named `DEV-INO.lock` (so every path to the same
 * image maps to one lock) holding the owner's pid and process start time. The file is written
 * whole under a temporary name, then hard-linked into place (atomic, fails if present). A lock whose
 * process is gone (or whose pid now belongs to another process) is taken over: it is renamed aside
 * (atomic, one winner) and checked to be the very file judged stale before it is dropped.
 * Fails with IMAGE_BUSY naming the holder's pid when a live process holds it.
 */
export async function acquireImageLock(imagePath: string, lockDir: string): Promise<ImageLock> {
  let st;
  try {
    st = await stat(imagePath);
  } catch (err) {
    throw fromSystemError(err, imagePath, 'image');
  }
  await mkdir(lockDir, { recursive: true, mode: 0o700 });
  const lockPath = join(lockDir, `${st.dev}-${st.ino}.lock`);
  const start = await processStartTime(process.pid);
  if (start === null) throw new AtrestError('INTERNAL', 'cannot read /proc/self/stat');
  const me: Holder = { pid: process.pid, start, token: randomBytes(12).toString('hex'), image: imagePath };
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
      await takeOverIfStale(lockPath, imagePath);
    }
    throw new AtrestError('IMAGE_BUSY', `image ${imagePath} is being locked by another process right now`, {
      path: imagePath,
      hint: 'try again',
    });
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Throws IMAGE_BUSY if the current lock is live; otherwise moves it out of the way. */
async function takeOverIfStale(lockPath: string, imagePath: string): Promise<void> {
  let text: string;
  let before;
  try {
    before = await stat(lockPath);
    text = await readFile(lockPath, 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return; // released meanwhile: retry
    throw fromSystemError(err, lockPath, 'lock file');
  }
  const holder = parseHolder(text);
  if (holder !== null && (await holderAlive(holder))) {
    throw new AtrestError('IMAGE_BUSY', `image ${imagePath} is in use by process ${holder.pid}`, {
      path: imagePath,
      hint:
        holder.pid === process.pid
          ? 'it is already open in this daemon'
          : `close it there first (pid ${holder.pid})`,
    });
  }
  if (holder === null && Date.now() - before.mtimeMs < UNREADABLE_GRACE_MS) {
    throw new AtrestError('IMAGE_BUSY', `image ${imagePath} is being locked by another process`, {
      path: imagePath,
      hint: 'try again in a few seconds',
    });
  }
  const aside = `${lockPath}.stale.${randomBytes(6).toString('hex')}`;
  try {
    await rename(lockPath, aside);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return;
    throw fromSystemError(err, lockPath, 'lock file');
  }
  const moved = await stat(aside);
  if (moved.ino !== before.ino) {
    // another process replaced the stale lock with its live one between our read and rename: put it back
    await link(aside, lockPath).catch(() => undefined);
    await unlink(aside).catch(() => undefined);
    throw new AtrestError('IMAGE_BUSY', `image ${imagePath} was just locked by another process`, {
      path: imagePath,
    });
  }
  await unlink(aside).catch(() => undefined);
}

function makeLock(lockPath: string, me: Holder): ImageLock {
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
