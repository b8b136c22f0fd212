// What the benchmark scripts share: running a command, a private atrest environment (run/state dirs, key store, audit log), test images.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'atrest.js');
const MiB = 2 ** 20;

/** Runs a command; resolves { stdout, stderr }, rejects naming it when it fails or times out. */
export function run(cmd, args, { env = process.env, timeoutMs = 600_000 } = {}) {
  return new Promise((res, rej) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', rej);
    const what = cmd === process.execPath ? `atrest ${args[1]}` : `${cmd} ${args.join(' ')}`;
    c.on('close', (code) => {
      clearTimeout(t);
      if (code !== 0) rej(new Error(`${what} exited ${code}: ${(err || out).trim().slice(-400)}`));
      else res({ stdout: out, stderr: err });
    });
  });
}

/** The environment for `atrest` commands (and the daemon they start) that keeps everything under `dir`. */
export function privateEnv(dir, extra = {}) {
  return {
    ...process.env,
    ATREST_RUN_DIR: join(dir, 'run'),
    ATREST_STATE_DIR: join(dir, 'state'),
    ATREST_KEY_STORE: join(dir, 'keys'),
    ATREST_AUDIT_LOG: join(dir, 'audit.log'),
    ATREST_PROVIDERS: join(dir, 'providers.json'),
    ...extra,
  };
}

/**
 * Runs `fn(dir, env, atrest)` in a private atrest environment (a temp dir `prefix`+random; `env` adds
 * variables), then stops its daemon and removes every mount, loop device and file it left. `atrest(args)`
 * runs bin/atrest.js there and resolves { stdout, stderr }. With `daemonLogOnError`, a failure first
 * prints the last lines of the daemon's log.
 */
export async function withPrivateAtrest(prefix, { env: extra = {}, daemonLogOnError = false }, fn) {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const env = privateEnv(dir, extra);
  const atrest = (args) => run(process.execPath, [BIN, ...args], { env });
  try {
    return await fn(dir, env, atrest);
  } catch (err) {
    if (daemonLogOnError) {
      const log = await readFile(join(env.ATREST_STATE_DIR, 'daemon.log'), 'utf8').catch(() => '');
      console.error(`daemon log (last lines):\n${log.split('\n').slice(-15).join('\n')}`);
    }
    throw err;
  } finally {
    await atrest(['daemon', '--stop']).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    await run('bash', [join(ROOT, 'scripts', 'cleanup'), dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** A plaintext image of `size` bytes: random data after a zero first block (like a real disk image), written in 8 MiB chunks. */
export async function randomFile(path, size) {
  const fh = await open(path, 'w');
  try {
    for (let o = 0; o < size; o += 8 * MiB) {
      const chunk = randomBytes(Math.min(8 * MiB, size - o));
      if (o === 0) chunk.fill(0, 0, 4096);
      await fh.write(chunk);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}
