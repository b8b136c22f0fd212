// Native tests under load: background processes (tracked, killed by afterEach), bounded waits, fio verify and
// load jobs, and who still holds a file or device.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import type { RunResult } from './cli.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Started {
  child: ChildProcess;
  /** Resolves when the process has exited (output collected), with when it exited. */
  done: Promise<RunResult & { exitedAt: number }>;
}

/** Starts a program in the background, added to `children` (for afterEach to kill); SIGKILLed after timeoutMs. */
export function start(
  children: ChildProcess[],
  cmd: string,
  args: string[],
  timeoutMs = 120_000,
  env = process.env,
): Started {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<RunResult & { exitedAt: number }>((res) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      res({ code: code ?? (signal ? 128 : 1), stdout, stderr, exitedAt: Date.now() });
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      res({ code: 127, stdout, stderr: String(err), exitedAt: Date.now() });
    });
  });
  return { child, done };
}

/** Resolves with the value, or rejects naming `what` when it takes longer than ms. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * fio arguments for crc32c-verified O_DIRECT libaio random writes (mixed 4k/1M, iodepth 16), one job per
 * entry of `regions` ([name, offset]) of `size` each; `global` goes before the jobs, so it applies to all.
 */
export function fioVerify(
  file: string,
  size: string,
  regions: Array<[string, string]>,
  global: string[] = [],
): string[] {
  return [
    `--filename=${file}`,
    '--ioengine=libaio',
    '--direct=1',
    '--iodepth=16',
    '--rw=randwrite',
    '--bssplit=4k/70:1M/30',
    `--size=${size}`,
    '--verify=crc32c',
    '--verify_fatal=1',
    ...global,
    ...regions.flatMap(([name, offset]) => [`--name=${name}`, `--offset=${offset}`]),
  ];
}

/** Background fio write load (errors expected when the disk goes away): time based, several jobs. */
export function fioLoad(
  children: ChildProcess[],
  name: string,
  file: string,
  offset: string,
  size: string,
): Started {
  return start(children, 'fio', [
    `--name=${name}`,
    `--filename=${file}`,
    '--ioengine=libaio',
    '--direct=1',
    '--iodepth=16',
    '--numjobs=2',
    '--rw=randrw',
    '--bssplit=4k/70:1M/30',
    `--offset=${offset}`,
    `--size=${size}`,
    '--time_based',
    '--runtime=60',
    '--fsync=32',
  ]);
}

/** Processes (other than us) holding an open descriptor on any of `paths`. */
async function holders(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (paths.includes(target)) {
        const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
        out.push(`${pid} (${comm}) -> ${target}`);
      }
    }
  }
  return out;
}

/** Holders of `paths` that stay for 10 s (a passing probe such as udev's blkid is not a hung process). */
export async function lastingHolders(paths: string[]): Promise<string[]> {
  let h = await holders(paths);
  for (let i = 0; i < 20 && h.length > 0; i++) {
    await sleep(500);
    h = await holders(paths);
  }
  return h;
}

/** Whether something is mounted on `path` (this mount namespace). */
export async function mountedAt(path: string): Promise<boolean> {
  return (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').some((l) => l.split(' ')[4] === path);
}
