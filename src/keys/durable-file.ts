// Crash-safe small files in the key store: atomic replace (temp, fsync, rename, directory fsync), durable mkdir.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';

/** Test hook: awaited at named points of a write; a test may stop there (a crash) or throw. */
export type KillPoint = (name: string) => void | Promise<void>;

/** Temp files of an atomic replace are named `.NAME.tmp-RANDOM` next to NAME. */
const TEMP_RE = /^\..+\.tmp-[0-9a-f]+$/;
/** A temp file this old belongs to a writer that crashed (a write takes milliseconds). */
export const STALE_TEMP_MS = 60_000;

/** fsyncs a directory, making the entries created, renamed or removed in it durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const dh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * mkdir -p with `mode`, then makes every directory it created durable in its parent (fsync of each
 * parent from the first created one down), so a file written and synced inside survives a power loss.
 */
export async function mkdirDurable(dir: string, mode: number): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode });
  if (first === undefined) return;
  await fsyncDir(dirname(first));
  const rest = relative(first, dir);
  let d = first;
  for (const part of rest === '' ? [] : rest.split(sep)) {
    await fsyncDir(d);
    d = join(d, part);
  }
}

/**
 * Replaces `dir/name` with `data` so that a crash at any instant leaves either the old file or the new
 * one, never a torn one: a temp file in the same directory (O_EXCL, O_NOFOLLOW, `mode`), write, fsync,
 * rename over `name`, fsync of the directory. On failure the temp file is removed.
 */
export async function replaceFileDurably(
  dir: string,
  name: string,
  data: Uint8Array,
  opts: { mode?: number; killPoint?: KillPoint } = {},
): Promise<void> {
  const tmp = join(dir, `.${name}.tmp-${randomBytes(6).toString('hex')}`);
  const fh = await open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    opts.mode ?? 0o600,
  );
  let renamed = false;
  try {
    try {
      await fh.chmod(opts.mode ?? 0o600);
      await fh.writeFile(data);
      await opts.killPoint?.('temp-written');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await opts.killPoint?.('temp-synced');
    await rename(tmp, join(dir, name));
    renamed = true;
    await opts.killPoint?.('renamed');
    await fsyncDir(dir);
  } finally {
    if (!renamed) await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Removes temp files of atomic replaces in `dir` older than `olderThanMs`: leftovers of writers that
 * crashed. Readers ignore them anyway (their names never match a record). Returns the names removed.
 */
export async function sweepStaleTemps(dir: string, olderThanMs = STALE_TEMP_MS): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  const now = Date.now();
  for (const n of names) {
    if (!TEMP_RE.test(n)) continue;
    const p = join(dir, n);
    try {
      const st = await lstat(p);
      if (!st.isFile() || now - st.mtimeMs < olderThanMs) continue;
      await unlink(p);
      removed.push(n);
    } catch {
      // gone meanwhile, or not ours to remove: leave it
    }
  }
  return removed;
}
