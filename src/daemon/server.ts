// The long-lived daemon process: owns the FUSE mounts and keys, answers the control socket, stops cleanly.
import { chmod, mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { AtrestError, isAtrestError } from '../errors/index.js';
import { requireFips } from '../crypto/index.js';
import { fileAuditSink } from './audit.js';
import { excludeMemoryFromCoreDumps } from './core-dumps.js';
import { loadConfig } from './config.js';
import { Notifier } from './notify.js';
import { cleanupStaleMounts } from './stale.js';
import { ping } from './client.js';
import { FrameReader, writeFrame, type Frame } from './framing.js';
import { parseEnvelope, SecretReply, type Request, type Response } from './protocol.js';
import type { RuntimePaths } from './paths.js';
import { VolumeService } from './service.js';
import { DEFAULT_FUSE_BACKEND, requireFuseBackend, type FuseSettings } from '../fuse/backend.js';

export const VERSION = '0.1.0';

export interface DaemonOptions {
  paths: RuntimePaths;
  logLevel?: string;
  /** KEK check interval (revocation, new versions); default 5 s. */
  keyCheckIntervalMs?: number;
  /** How long volumes stay open while their key server cannot be reached (default 10 min). */
  keyUnreachableGraceMs?: number;
  /** Refuse to start unless Node's OpenSSL is in FIPS mode; then PBKDF2 keyslots only. */
  fips?: boolean;
  /** Configuration file of volumes to open at start (and on SIGHUP). */
  config?: string;
  /** FUSE backend, workers (--fuse-backend, --fuse-workers, ATREST_FUSE_*). */
  fuse?: FuseSettings;
}

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

/** One pino JSON line as a human line: `12:34:56.789 INFO  message key=value ...`. */
export function humanLogLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, pid: _pid, ...rest } = o;
  const t = typeof time === 'string' ? time.slice(11, 23) : '';
  const lv = (LEVELS[Number(level)] ?? String(level)).padEnd(5);
  const kv = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${t} ${lv} ${typeof msg === 'string' ? msg : ''}${kv ? `  ${kv}` : ''}`;
}

/**
 * Makes a pino logger: JSON lines on stdout (journald, the log file), or human lines when stdout is a
 * terminal. Never give it key material.
 */
export function makeLogger(level = 'info'): Logger {
  const opts = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (!process.stdout.isTTY) return pino(opts);
  const human = new Writable({
    write(chunk: Buffer, _enc, done): void {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line) process.stdout.write(`${humanLogLine(line)}\n`);
      done();
    },
  });
  return pino(opts, human);
}

export class Daemon {
  private server: Server | null = null;
  private readonly service: VolumeService;
  private readonly log: Logger;
  private stopping: Promise<void> | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly notifier = new Notifier();

  constructor(private readonly opts: DaemonOptions) {
    this.log = makeLogger(opts.logLevel);
    this.service = new VolumeService(opts.paths, this.log, {
      audit: fileAuditSink(opts.paths.auditLog, { source: 'daemon' }),
      ...(opts.keyCheckIntervalMs === undefined ? {} : { keyCheckIntervalMs: opts.keyCheckIntervalMs }),
      ...(opts.keyUnreachableGraceMs === undefined
        ? {}
        : { keyUnreachableGraceMs: opts.keyUnreachableGraceMs }),
      fips: opts.fips === true,
      ...(opts.fuse === undefined ? {} : { fuse: opts.fuse }),
    });
  }

  /** Starts serving; resolves once the control socket accepts connections. */
  async start(): Promise<void> {
    const { paths } = this.opts;
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      throw new AtrestError('NOT_ROOT', 'the atrest daemon must run as root', { hint: 'run it with sudo' });
    }
    if (this.opts.fips === true) requireFips();
    if (!(await excludeMemoryFromCoreDumps()))
      this.log.warn(
        { event: 'coredump-filter' },
        'could not keep memory out of core dumps; run with LimitCORE=0',
      );
    // a bad configuration stops the start before anything (image, mount, socket) is touched
    const config = this.opts.config === undefined ? null : await loadConfig(this.opts.config);
    // so does choosing the libfuse fallback when its binding is not built
    requireFuseBackend(this.opts.fuse?.backend ?? config?.fuseBackend ?? DEFAULT_FUSE_BACKEND);
    await mkdir(paths.stateDir, { recursive: true, mode: 0o700 });
    await chmod(paths.stateDir, 0o700);
    await mkdir(paths.lockDir, { recursive: true, mode: 0o700 });
    await mkdir(paths.runDir, { recursive: true, mode: 0o755 });
    if (await ping(paths)) {
      throw new AtrestError('IMAGE_BUSY', `another atrest daemon already serves ${paths.socket}`, {
        hint: 'use that one, or stop it first',
      });
    }
    await unlink(paths.socket).catch(() => undefined);
    const cleaned = await cleanupStaleMounts(paths.runDir);
    for (const m of cleaned)
      this.log.warn({ event: 'stale-mount', path: m }, 'removed a stale mount left by a crash');

    const server = createServer((sock) => this.onConnection(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(paths.socket, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    await chmod(paths.socket, 0o600);
    await writeFile(paths.pidFile, `${process.pid}\n`, { mode: 0o600 });
    this.server = server;
    this.service.startKeyChecks();
    process.on('SIGTERM', () => void this.stop('SIGTERM'));
    process.on('SIGHUP', () => void this.reload());
    process.on('SIGINT', () => void this.stop('SIGINT'));
    if (config !== null) {
      await this.notifier.status(`opening ${config.volumes.length} configured volume(s)`);
      const r = await this.service.applyConfig(config);
      this.log.info({ event: 'config-applied', config: config.path, ...r }, 'configured volumes opened');
    }
    const n = this.service.size;
    await this.notifier.ready(`serving ${n} volume(s)`);
    this.notifier.startWatchdog();
    this.log.info(
      {
        event: 'start',
        socket: paths.socket,
        runDir: paths.runDir,
        version: VERSION,
        keyCheckIntervalMs: this.service.keyCheckIntervalMs,
        keyUnreachableGraceMs: this.service.keyUnreachableGraceMs,
        fips: this.opts.fips === true,
      },
      'daemon ready',
    );
  }

  private onConnection(sock: Socket): void {
    this.sockets.add(sock);
    const reader = new FrameReader(
      (frame) => void this.handleFrame(sock, frame),
      (err) => {
        // the stream is out of step: answer once, then hang up
        if (!sock.destroyed) {
          const res: Response = { id: 0, ok: false, error: err.toJSON() };
          void writeFrame(sock, { ...res }).finally(() => sock.destroy());
        }
      },
      'USAGE',
      'control request',
    );
    sock.on('close', () => {
      reader.destroy();
      this.sockets.delete(sock);
    });
    sock.on('error', () => undefined);
    sock.on('end', () => reader.end());
    sock.on('data', (chunk: Buffer) => reader.push(chunk));
  }

  /** Answers one request; its secrets (and those of the reply) are wiped whatever happens. */
  private async handleFrame(sock: Socket, frame: Frame): Promise<void> {
    let id = 0;
    let res: Response;
    let replySecrets: Buffer[] = [];
    try {
      const env = parseEnvelope(frame.message, frame.secrets);
      id = env.id;
      const result = await this.dispatch(env.request);
      if (result instanceof SecretReply) {
        replySecrets = result.secrets;
        res = { id, ok: true, result: result.result };
      } else {
        res = { id, ok: true, result };
      }
    } catch (err) {
      if (!isAtrestError(err)) {
        this.log.error(
          { event: 'internal-error', err: err instanceof Error ? err.stack : String(err) },
          'bug',
        );
      }
      const e = isAtrestError(err)
        ? err
        : new AtrestError('INTERNAL', 'internal error in the daemon; see its log');
      res = { id, ok: false, error: e.toJSON() };
    } finally {
      for (const s of frame.secrets) s.fill(0);
    }
    try {
      if (!sock.destroyed) await writeFrame(sock, { ...res }, replySecrets);
    } catch {
      // the client went away; nothing to answer
    } finally {
      for (const s of replySecrets) s.fill(0);
    }
  }

  private async dispatch(req: Request): Promise<unknown> {
    if (this.stopping && req.op !== 'ping' && req.op !== 'status') {
      throw new AtrestError('DAEMON_UNAVAILABLE', 'the daemon is shutting down', {
        hint: 'try again shortly',
      });
    }
    switch (req.op) {
      case 'ping':
        return { pid: process.pid, version: VERSION, volumes: this.service.size };
      case 'open':
        return this.service.open(req);
      case 'close':
        await this.service.close(req.name);
        return { closed: req.name };
      case 'status':
        return this.service.status(req.name);
      case 'reencrypt': {
        const { recovery } = await this.service.reencrypt(
          req.name,
          req.keyFiles,
          req.maxRate,
          req.passphrases,
        );
        // new recovery passphrases go back as raw secret bytes after the JSON line, never in it
        return new SecretReply({ recoveryKeys: recovery.length }, recovery);
      }
      case 'convert':
        this.service.controlConversion(req.name, req.action);
        return { [req.action === 'pause' ? 'paused' : 'resumed']: req.name };
      case 'shutdown':
        setImmediate(() => void this.stop('request'));
        return { stopping: true };
    }
  }

  /** SIGHUP: re-reads the configuration; opens new volumes, closes removed ones, leaves the rest. */
  private async reload(): Promise<void> {
    if (this.opts.config === undefined || this.stopping) return;
    try {
      await this.notifier.send('RELOADING=1', 'STATUS=reloading the configuration');
      const config = await loadConfig(this.opts.config);
      const r = await this.service.applyConfig(config);
      this.log.info({ event: 'reload', config: config.path, ...r }, 'configuration reloaded');
    } catch (err) {
      this.log.error(
        { event: 'reload-failed', reason: isAtrestError(err) ? err.oneLine() : String(err) },
        'configuration not reloaded; the volumes stay as they are',
      );
    }
    await this.notifier.ready(`serving ${this.service.size} volume(s)`);
  }

  /** Closes every volume, removes the socket and exits the process. Idempotent. */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ event: 'stop', reason }, 'daemon stopping');
      await this.notifier.stopping(`closing ${this.service.size} volume(s)`);
      await this.service.closeAll();
      this.server?.close();
      for (const s of this.sockets) s.end();
      await unlink(this.opts.paths.socket).catch(() => undefined);
      const pid = await readFile(this.opts.paths.pidFile, 'utf8').catch(() => '');
      if (pid.trim() === String(process.pid)) await rm(this.opts.paths.pidFile, { force: true });
      this.log.info({ event: 'stopped' }, 'daemon stopped');
      setTimeout(() => process.exit(0), 50).unref();
    })();
    return this.stopping;
  }
}
