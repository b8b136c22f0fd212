// Reading /proc/self/mountinfo and taking FUSE mounts down robustly: fusermount -u, umount -l, connection abort.
import { access, readFile, writeFile } from 'node:fs/promises';
import { spawnHelper } from './spawn.js';

export interface FuseMountEntry {
  mountPoint: string;
  fsType: string;
  /** Minor device number: the connection number under /sys/fs/fuse/connections. */
  minor: number;
}

export interface MountEntry extends FuseMountEntry {
  /** The mount source (a device such as /dev/loop3, or a name). */
  source: string;
}

/** Parses /proc/PID/mountinfo text (octal escapes such as \040 decoded). */
export function parseMountinfo(text: string): MountEntry[] {
  const unescape = (v: string): string =>
    v.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fields = line.slice(0, sep).split(' ');
    const after = line.slice(sep + 3).split(' ');
    const mp = fields[4];
    if (mp === undefined) continue;
    out.push({
      mountPoint: unescape(mp),
      fsType: after[0] ?? '',
      source: unescape(after[1] ?? ''),
      minor: Number((fields[2] ?? '').split(':')[1] ?? -1),
    });
  }
  return out;
}

/** Every mount of this mount namespace. */
export async function mounts(): Promise<MountEntry[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** Every mount of this mount namespace whose type starts with `fuse`. */
export async function fuseMounts(): Promise<FuseMountEntry[]> {
  return (await mounts()).filter((m) => m.fsType.startsWith('fuse'));
}

/** The topmost FUSE mount on `path`, or null. */
export async function fuseMountAt(path: string): Promise<FuseMountEntry | null> {
  const all = (await fuseMounts()).filter((m) => m.mountPoint === path);
  return all[all.length - 1] ?? null;
}

/** Asks the kernel to abort FUSE connection `minor` (mounting fusectl if needed). Best effort. */
export async function abortConnection(minor: number): Promise<boolean> {
  const dir = '/sys/fs/fuse/connections';
  const file = `${dir}/${minor}/abort`;
  try {
    await access(file);
  } catch {
    await spawnHelper('mount', ['-t', 'fusectl', 'fusectl', dir], { timeoutMs: 5_000 }).catch(
      () => undefined,
    );
  }
  try {
    await writeFile(file, '1');
    return true;
  } catch {
    return false;
  }
}

/** True while FUSE connection `minor` exists (someone still holds it). */
export async function connectionAlive(minor: number): Promise<boolean> {
  try {
    await access(`/sys/fs/fuse/connections/${minor}`);
    return true;
  } catch {
    return false;
  }
}

export interface UnmountOptions {
  /** Per step; default 5 s. */
  timeoutMs?: number;
  /** Known connection number (read from mountinfo when omitted). */
  minor?: number;
}

/**
 * Takes the FUSE mount on `path` down: `fusermount -u` (clean, fails if busy) under a timeout, then
 * `umount -l` (detach now, connection lives on while used), and as a last resort aborts the
 * connection (every pending and future request fails). Returns how it went away ('none' when
 * nothing was mounted). Never throws for a mount that is already gone.
 */
export async function unmountFuse(
  path: string,
  opts: UnmountOptions = {},
): Promise<'none' | 'fusermount' | 'lazy' | 'abort'> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const entry = await fuseMountAt(path);
  const minor = opts.minor ?? entry?.minor;
  if (entry === null) {
    if (minor !== undefined && (await connectionAlive(minor))) await abortConnection(minor);
    return 'none';
  }
  const r = await spawnHelper('fusermount', ['-u', path], { timeoutMs, hostMounts: true }).catch(() => null);
  if (r?.code === 0 && (await fuseMountAt(path)) === null) return 'fusermount';
  if ((await fuseMountAt(path)) !== null) {
    await spawnHelper('umount', ['-l', path], { timeoutMs, hostMounts: true }).catch(() => null);
  }
  if ((await fuseMountAt(path)) === null) return 'lazy';
  if (minor !== undefined) await abortConnection(minor);
  await spawnHelper('umount', ['-l', path], { timeoutMs, hostMounts: true }).catch(() => null);
  return 'abort';
}

/**
 * Removes a FUSE mount left by a dead server: unmount (abort if it hangs) and abort its connection
 * if anything still holds it, so nothing blocks forever on it.
 */
export async function unmountStale(path: string): Promise<void> {
  const entry = await fuseMountAt(path);
  if (entry === null) return;
  await unmountFuse(path, { minor: entry.minor, timeoutMs: 3_000 });
  if (await connectionAlive(entry.minor)) await abortConnection(entry.minor);
}
