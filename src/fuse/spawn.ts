// Runs helper programs without leaking /dev/fuse descriptors into them, always under a timeout.
import { spawn } from 'node:child_process';
import { readdir, readlink } from 'node:fs/promises';
import { envSet } from '../errors/env.js';
import { AtrestError } from '../errors/index.js';

export interface SpawnHelperOptions {
  /** Killed (SIGKILL) when it runs longer than this. Required: a child stuck on a mount must not hang us. */
  timeoutMs: number;
  /** Written to the child's stdin, which is then closed (stdin is empty otherwise). */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  /**
   * Run it in the host's mount namespace (mount, umount, fusermount): when this process lives in a
   * private one (a hardened systemd unit), mounts made there would never reach the host.
   */
  hostMounts?: boolean;
}

let privateNs: Promise<boolean> | null = null;

/** The host's mount namespace: PID 1's, or ATREST_HOST_MNT_NS (tests, machines whose PID 1 is not init). */
export function hostMountNamespace(env: NodeJS.ProcessEnv = process.env): string {
  return envSet('ATREST_HOST_MNT_NS', env) ?? '/proc/1/ns/mnt';
}

/**
 * Whether this process runs in another mount namespace than the host's (systemd's ProtectSystem=,
 * PrivateTmp=, ... give a service its own, whose mounts do not propagate to the host).
 */
export function inPrivateMountNamespace(): Promise<boolean> {
  privateNs ??= (async () => {
    try {
      const [mine, init] = await Promise.all([readlink('/proc/self/ns/mnt'), readlink(hostMountNamespace())]);
      return mine !== init;
    } catch {
      return false;
    }
  })();
  return privateNs;
}

export interface SpawnHelperResult {
  /** Exit code; 128 + signal number style 137 when killed, -1 if it could not start. */
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** The descriptors of this process open on /dev/fuse (libfuse2 opens it without O_CLOEXEC). */
export async function fuseDeviceFds(): Promise<number[]> {
  const out: number[] = [];
  let names: string[];
  try {
    names = await readdir('/proc/self/fd');
  } catch {
    return out;
  }
  for (const name of names) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd < 3) continue;
    try {
      if ((await readlink(`/proc/self/fd/${name}`)) === '/dev/fuse') out.push(fd);
    } catch {
      /* closed meanwhile */
    }
  }
  return out.sort((a, b) => a - b);
}

/**
 * Runs `cmd args` and collects its output. If this process holds /dev/fuse descriptors, the child
 * starts through bash, which closes them before exec'ing the program: a child holding a FUSE device
 * keeps that connection alive (and can deadlock an unmount). Never rejects for a non-zero exit;
 * rejects with MISSING_TOOL when the program does not exist.
 */
export async function spawnHelper(
  cmd: string,
  args: readonly string[],
  opts: SpawnHelperOptions,
): Promise<SpawnHelperResult> {
  const fds = await fuseDeviceFds();
  let file = cmd;
  let argv = [...args];
  if (opts.hostMounts === true && (await inPrivateMountNamespace())) {
    argv = [`--mount=${hostMountNamespace(opts.env)}`, '--', cmd, ...argv];
    file = 'nsenter';
  }
  const env: NodeJS.ProcessEnv = { ...(opts.env ?? process.env) };
  if (fds.length > 0) {
    // bash (not dash: it cannot name descriptors above 9); BASH_ENV unset so no startup file runs
    delete env.BASH_ENV;
    delete env.ENV;
    const closes = fds.map((fd) => `exec ${fd}<&-;`).join(' ');
    argv = ['--noprofile', '--norc', '-c', `${closes} exec "$0" "$@"`, file, ...argv];
    file = '/bin/bash';
  }
  return new Promise<SpawnHelperResult>((resolve, reject) => {
    const child = spawn(file, argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT') {
        reject(
          new AtrestError('MISSING_TOOL', `${cmd} is not installed`, { hint: `install ${cmd}`, cause: err }),
        );
      } else {
        reject(
          new AtrestError('INTERNAL', `could not run ${cmd}: ${err.code ?? err.message}`, { cause: err }),
        );
      }
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (fds.length > 0 && code === 127 && /not found/.test(stderr)) {
        reject(new AtrestError('MISSING_TOOL', `${cmd} is not installed`, { hint: `install ${cmd}` }));
        return;
      }
      resolve({ code: code ?? (signal ? 137 : -1), stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}
