// Runs the real `atrest` CLI (compiled dist/) against private run/state directories, with timeouts.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { EncryptionStatus } from '../../src/daemon/protocol.js';
import { expect } from 'vitest';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'bin', 'atrest.js');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs any program with a timeout (SIGKILL on expiry), collecting its output. */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: Buffer | string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // a child that exits before reading its input
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run, but throws with the output when the exit code is not 0. */
export async function must(
  cmd: string,
  args: string[],
  opts: Parameters<typeof run>[2] = {},
): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Runs `atrest args` in `t`, expects exit 0 (the assertion names the command and its stderr), returns stdout trimmed. */
export async function atrestOk(t: AtrestEnv, args: string[]): Promise<string> {
  const r = await t.atrest(args);
  expect(r.code, `atrest ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout.trim();
}

/** A private atrest environment: its own run dir (disk files) and state dir (socket, locks, log). */
export interface AtrestEnv {
  dir: string;
  env: NodeJS.ProcessEnv;
  runDir: string;
  atrest(args: string[], opts?: { input?: Buffer | string; timeoutMs?: number }): Promise<RunResult>;
  cleanup(): Promise<void>;
}

export async function makeAtrestEnv(prefix = 'atrest-e2e-'): Promise<AtrestEnv> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const runDir = join(dir, 'run');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ATREST_RUN_DIR: runDir,
    ATREST_STATE_DIR: join(dir, 'state'),
    ATREST_KEY_STORE: join(dir, 'keys'),
    ATREST_AUDIT_LOG: join(dir, 'audit.log'),
    ATREST_PROVIDERS: join(dir, 'providers.json'),
  };
  const runAtrest = (
    args: string[],
    opts: { input?: Buffer | string; timeoutMs?: number } = {},
  ): Promise<RunResult> => run(process.execPath, [BIN, ...args], { env, ...opts });
  // A test that outlives its timeout keeps running after cleanup(); its next command would start a
  // daemon in the removed directory that nothing stops. After cleanup, commands are refused instead.
  let cleanedUp = false;
  const atrest = (
    args: string[],
    opts: { input?: Buffer | string; timeoutMs?: number } = {},
  ): Promise<RunResult> =>
    cleanedUp
      ? Promise.reject(
          new Error(`atrest ${args.join(' ')}: ${dir} is already cleaned up (the test outlived its timeout)`),
        )
      : runAtrest(args, opts);
  return {
    dir,
    env,
    runDir,
    atrest,
    async cleanup(): Promise<void> {
      cleanedUp = true;
      // Unmount filesystems we mounted under dir, stop the daemon (closes volumes), then sweep leftovers.
      const mounts = await run('sh', ['-c', `grep -F ' ${dir}/' /proc/mounts | awk '{print $2}' | sort -r`]);
      for (const m of mounts.stdout.split('\n').filter(Boolean)) {
        if (!m.startsWith(runDir)) await run('umount', ['-l', m], { timeoutMs: 20_000 });
      }
      const pid = Number((await readFile(join(dir, 'state', 'daemon.pid'), 'utf8').catch(() => '')).trim());
      await runAtrest(['daemon', '--stop'], { timeoutMs: 60_000 });
      if (pid > 0) await waitForExit(pid, 30_000);
      await run('bash', [join(ROOT, 'scripts', 'cleanup'), dir], { timeoutMs: 60_000 });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits for a process to exit; SIGKILLs it after timeoutMs. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      return false;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** The encryption block of open volume NAME (`atrest status NAME --json`); throws when status fails. */
export async function encryptionOf(t: AtrestEnv, name: string): Promise<EncryptionStatus> {
  const r = await t.atrest(['status', name, '--json']);
  if (r.code !== 0) throw new Error(`atrest status ${name} exited ${r.code}: ${r.stderr}`);
  const e = (JSON.parse(r.stdout) as { volumes: Array<{ encryption: EncryptionStatus }> }).volumes[0]
    ?.encryption;
  if (e === undefined) throw new Error(`atrest status ${name}: no volume`);
  return e;
}
