// Talks to the daemon over its root-only unix socket, starting the daemon when it is not running.
import { spawn } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { AtrestError, type AtrestErrorJSON } from '../errors/index.js';
import { FrameReader, writeFrame } from './framing.js';
import type { Request, PingResult } from './protocol.js';
import type { RuntimePaths } from './paths.js';

let nextId = 1;

function connectOnce(socketPath: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

function isDaemonAbsent(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}

/** Sends one request and waits for its answer (or `timeoutMs`). Secrets in the answer are wiped. */
export async function request(paths: RuntimePaths, req: Request, timeoutMs = 120_000): Promise<unknown> {
  const { result, secrets } = await requestWithSecrets(paths, req, [], timeoutMs);
  for (const s of secrets) s.fill(0);
  return result;
}

/**
 * Sends one request followed by `secrets` as raw bytes (framing.ts: never JSON, never a string) and
 * waits for the answer and the secrets that follow it (e.g. new recovery passphrases). The caller
 * wipes its own `secrets` and the returned ones.
 */
export async function requestWithSecrets(
  paths: RuntimePaths,
  req: Request,
  secrets: readonly Uint8Array[],
  timeoutMs = 120_000,
): Promise<{ result: unknown; secrets: Buffer[] }> {
  let sock: Socket;
  try {
    sock = await connectOnce(paths.socket);
  } catch (err) {
    if (isDaemonAbsent(err)) {
      throw new AtrestError('DAEMON_UNAVAILABLE', `the atrest daemon is not running (no ${paths.socket})`, {
        hint: 'open a volume (it starts the daemon) or run `atrest daemon`',
      });
    }
    throw new AtrestError('DAEMON_UNAVAILABLE', `cannot reach the atrest daemon at ${paths.socket}`, {
      hint: 'run atrest as root',
      cause: err,
    });
  }
  const id = nextId++;
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      finish(() =>
        reject(
          new AtrestError(
            'TIMEOUT',
            `the atrest daemon did not answer ${req.op} within ${timeoutMs / 1000} s`,
          ),
        ),
      );
    }, timeoutMs);
    const reader = new FrameReader(
      (frame) => {
        const msg = frame.message as { ok?: unknown; result?: unknown; error?: AtrestErrorJSON };
        if (msg.ok === true) {
          finish(() => resolve({ result: msg.result, secrets: frame.secrets }));
          return;
        }
        for (const s of frame.secrets) s.fill(0);
        if (msg.error) {
          const e = msg.error;
          finish(() => reject(AtrestError.fromJSON(e)));
        } else
          finish(() => reject(new AtrestError('INTERNAL', 'the daemon sent an answer without a result')));
      },
      (err) => finish(() => reject(err)),
      'INTERNAL',
      "the daemon's answer",
    );
    function finish(fn: () => void): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reader.destroy();
      sock.destroy();
      fn();
    }
    sock.on('data', (chunk: Buffer) => reader.push(chunk));
    sock.on('end', () => reader.end());
    sock.on('error', (err) =>
      finish(() =>
        reject(new AtrestError('DAEMON_UNAVAILABLE', 'lost the connection to the daemon', { cause: err })),
      ),
    );
    sock.on('close', () =>
      finish(() =>
        reject(new AtrestError('DAEMON_UNAVAILABLE', 'the daemon closed the connection without answering')),
      ),
    );
    writeFrame(sock, { id, request: req }, secrets).catch((err: unknown) =>
      finish(() =>
        reject(new AtrestError('DAEMON_UNAVAILABLE', 'lost the connection to the daemon', { cause: err })),
      ),
    );
  });
}

/** Pings the daemon; null when none is running. */
export async function ping(paths: RuntimePaths): Promise<PingResult | null> {
  try {
    return (await request(paths, { op: 'ping' }, 10_000)) as PingResult;
  } catch (err) {
    if (err instanceof AtrestError && err.code === 'DAEMON_UNAVAILABLE') return null;
    throw err;
  }
}

/**
 * Makes sure a daemon is serving `paths`: starts `atrest daemon` detached (logging to the state
 * directory) when none answers, and waits until it does.
 */
export async function ensureDaemon(
  paths: RuntimePaths,
  entryScript: string,
  waitMs = 20_000,
): Promise<PingResult> {
  const running = await ping(paths);
  if (running) return running;
  await mkdir(paths.stateDir, { recursive: true, mode: 0o700 });
  const log = await open(paths.logFile, 'a', 0o600);
  try {
    const child = spawn(process.execPath, [entryScript, 'daemon'], {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: process.env,
    });
    child.unref();
  } finally {
    await log.close();
  }
  const deadline = Date.now() + waitMs;
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const p = await ping(paths);
    if (p) return p;
    if (Date.now() > deadline) {
      throw new AtrestError(
        'DAEMON_UNAVAILABLE',
        `the atrest daemon did not start within ${waitMs / 1000} s`,
        {
          hint: `see ${paths.logFile}`,
        },
      );
    }
  }
}

/** After a shutdown request: waits until the daemon has closed every volume and stopped answering. */
export async function waitForDaemonExit(paths: RuntimePaths, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  while ((await ping(paths)) !== null) {
    if (Date.now() > deadline) {
      throw new AtrestError('TIMEOUT', `the atrest daemon did not stop within ${waitMs / 1000} s`, {
        hint: `see ${paths.logFile}`,
      });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
