// A small pool of reused mutual-TLS connections to one KMIP server: one request in flight per connection, up
// to maxConnections, idle connections closed after idleMs (and never keeping the process alive), a deadline
// per call, and one retry on a fresh connection when a reused one turns out to have been closed by the server.
import { connect, type TLSSocket } from 'node:tls';
import { AtrestError } from '../../errors/index.js';
import { MAX_MESSAGE_BYTES, ttlvMessageLength } from './ttlv.js';
import {
  address,
  classifyTlsError,
  DEFAULT_TIMEOUT_MS,
  UNREACHABLE_HINT,
  type KmipEndpoint,
} from './transport.js';

export const DEFAULT_MAX_CONNECTIONS = 4;
export const DEFAULT_IDLE_MS = 5_000;

interface Pending {
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  chunks: Buffer[];
  received: number;
  total: number;
}

/** Thrown inside the pool when a reused connection was found closed before any answer: worth one retry. */
class StaleConnection extends Error {
  constructor(readonly error: AtrestError) {
    super(error.message);
  }
}

class Conn {
  readonly socket: TLSSocket | undefined;
  readonly ready: Promise<void>;
  dead = false;
  used = false;
  idleTimer: NodeJS.Timeout | undefined;
  private handshakeDone = false;
  private pending: Pending | undefined;
  private failReady: ((e: AtrestError) => void) | undefined;

  constructor(private readonly ep: KmipEndpoint) {
    const where = address(ep);
    let socket: TLSSocket;
    try {
      socket = connect({
        host: ep.host,
        port: ep.port,
        ca: ep.ca,
        cert: ep.cert,
        key: ep.key,
        minVersion: 'TLSv1.2',
        // SNI must not be an IP address; the certificate check still uses the host (SAN IP or DNS name).
        ...(/^[\d.]+$|:/.test(ep.host) ? {} : { servername: ep.host }),
      });
    } catch (err) {
      this.dead = true;
      this.ready = Promise.reject(classifyTlsError(err, ep));
      this.ready.catch(() => undefined);
      return;
    }
    this.socket = socket;
    this.ready = new Promise<void>((resolve, reject) => {
      this.failReady = reject;
      socket.once('secureConnect', () => {
        this.handshakeDone = true;
        this.failReady = undefined;
        resolve();
      });
    });
    this.ready.catch(() => undefined);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(classifyTlsError(err, ep), true));
    socket.on('close', () => {
      // A close without a TLS alert is not proof of a refused certificate (a server going down looks the
      // same), so it counts as unreachable; the message says what else it may be.
      const p = this.pending;
      const got = p && p.received > 0 ? ` after ${p.received} of ${p.total < 0 ? '?' : p.total} bytes` : '';
      this.fail(
        new AtrestError(
          'KEY_SERVER_UNREACHABLE',
          this.handshakeDone
            ? `key server ${where} unreachable: it closed the connection${got} before answering`
            : `key server ${where} unreachable: it closed the connection during the TLS handshake (or refused this host's client certificate without saying why)`,
          { hint: UNREACHABLE_HINT },
        ),
        true,
      );
    });
  }

  /** Sends one request on this (ready, idle) connection; resolves with the whole response message. */
  exchange(request: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (this.dead || !this.socket) {
        reject(
          new AtrestError(
            'KEY_SERVER_UNREACHABLE',
            `key server ${address(this.ep)} unreachable: connection closed`,
          ),
        );
        return;
      }
      this.pending = { resolve, reject, chunks: [], received: 0, total: -1 };
      this.socket.write(request);
    });
  }

  private onData(chunk: Buffer): void {
    const p = this.pending;
    if (!p) {
      chunk.fill(0);
      this.fail(
        new AtrestError('KEY_SERVER_ERROR', `key server ${address(this.ep)} sent data nobody asked for`, {
          hint: 'check that the address is a KMIP server',
        }),
        false,
      );
      return;
    }
    p.chunks.push(chunk);
    p.received += chunk.length;
    try {
      if (p.total < 0 && p.received >= 8) {
        const head = p.chunks.length === 1 ? chunk : Buffer.concat(p.chunks);
        p.total = ttlvMessageLength(head.subarray(0, 8), MAX_MESSAGE_BYTES);
        if (head !== chunk) head.fill(0);
      }
      if (p.total >= 0 && p.received > p.total)
        throw new AtrestError(
          'KEY_SERVER_ERROR',
          `key server ${address(this.ep)} sent ${p.received - p.total} bytes after its response`,
          { hint: 'check that the address is a KMIP server' },
        );
    } catch (err) {
      this.fail(classifyTlsError(err, this.ep), false);
      return;
    }
    if (p.total >= 0 && p.received === p.total) {
      const out = Buffer.concat(p.chunks, p.total);
      for (const c of p.chunks) c.fill(0);
      this.pending = undefined;
      this.used = true;
      p.resolve(out);
    }
  }

  /** Marks the connection dead and fails whatever waits on it. `network`: a close/reset, not a bad answer. */
  fail(err: AtrestError, network: boolean): void {
    if (this.dead) return;
    this.dead = true;
    clearTimeout(this.idleTimer);
    this.socket?.destroy();
    this.failReady?.(err);
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      for (const c of p.chunks) c.fill(0);
      // A reused connection the server had closed while idle: the request never got an answer.
      const stale = network && this.used && p.received === 0 && err.code === 'KEY_SERVER_UNREACHABLE';
      p.reject(stale ? new StaleConnection(err) : err);
    }
  }
}

/** Reused connections to one KMIP server. */
export class KmipPool {
  private readonly idle: Conn[] = [];
  private open = 0;
  private readonly waiters: ((c: Conn | undefined) => void)[] = [];
  private closed = false;
  private readonly maxConnections: number;
  private readonly idleMs: number;

  constructor(
    private readonly ep: KmipEndpoint,
    opts: { maxConnections?: number; idleMs?: number } = {},
  ) {
    this.maxConnections = Math.max(1, opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
    this.idleMs = Math.max(0, opts.idleMs ?? DEFAULT_IDLE_MS);
  }

  /**
   * Sends one request message and returns the response message (a Buffer the caller wipes). The deadline
   * (ep.timeoutMs) covers waiting for a connection, connecting, the TLS handshake and the answer.
   */
  async send(request: Buffer): Promise<Buffer> {
    const timeoutMs = this.ep.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const where = address(this.ep);
    let current: Conn | undefined;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        current?.fail(
          new AtrestError(
            'KEY_SERVER_UNREACHABLE',
            `key server ${where} unreachable: no answer within ${timeoutMs} ms`,
          ),
          false,
        );
        reject(
          new AtrestError(
            'KEY_SERVER_UNREACHABLE',
            `key server ${where} unreachable: no answer within ${timeoutMs} ms`,
            {
              hint: UNREACHABLE_HINT,
            },
          ),
        );
      }, timeoutMs);
    });
    timeout.catch(() => undefined);
    const attempt = async (fresh: boolean): Promise<Buffer> => {
      const conn = await this.acquire(fresh);
      current = conn;
      try {
        await conn.ready;
      } catch (err) {
        this.discard(conn);
        throw err;
      }
      if (timedOut) {
        // The caller has its answer (and may have wiped the request): send nothing, keep the connection.
        this.release(conn);
        throw new AtrestError('KEY_SERVER_UNREACHABLE', `key server ${where}: call timed out`);
      }
      conn.socket!.ref();
      try {
        const out = await conn.exchange(request);
        this.release(conn);
        return out;
      } catch (err) {
        this.discard(conn);
        throw err;
      }
    };
    try {
      return await Promise.race([
        attempt(false).catch((err: unknown) => {
          if (err instanceof StaleConnection) return attempt(true);
          throw err;
        }),
        timeout,
      ]);
    } catch (err) {
      if (err instanceof StaleConnection) throw err.error;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private acquire(fresh: boolean): Promise<Conn> {
    if (this.closed)
      return Promise.reject(
        new AtrestError('INTERNAL', `KMIP client for ${address(this.ep)} used after close()`),
      );
    // Connections the server closed while they were idle.
    for (let i = this.idle.length - 1; i >= 0; i--)
      if (this.idle[i]!.dead) {
        this.idle.splice(i, 1);
        this.open--;
      }
    if (!fresh && this.idle.length) {
      const c = this.idle.pop()!;
      clearTimeout(c.idleTimer);
      return Promise.resolve(c);
    }
    if (this.open < this.maxConnections) {
      this.open++;
      return Promise.resolve(new Conn(this.ep));
    }
    return new Promise<Conn>((resolve, reject) => {
      this.waiters.push((c) =>
        c ? resolve(c) : reject(new AtrestError('INTERNAL', `KMIP client for ${address(this.ep)} closed`)),
      );
    });
  }

  private release(conn: Conn): void {
    if (conn.dead || this.closed) return this.discard(conn);
    const w = this.waiters.shift();
    if (w) return w(conn);
    conn.socket!.unref();
    conn.idleTimer = setTimeout(() => {
      const i = this.idle.indexOf(conn);
      if (i >= 0) this.idle.splice(i, 1);
      this.open--;
      conn.socket!.end();
      conn.dead = true;
    }, this.idleMs);
    conn.idleTimer.unref();
    this.idle.push(conn);
  }

  private discard(conn: Conn): void {
    if (!conn.dead) conn.fail(new AtrestError('KEY_SERVER_UNREACHABLE', 'connection discarded'), false);
    this.open--;
    const w = this.waiters.shift();
    if (w) {
      this.open++;
      w(new Conn(this.ep));
    }
  }

  /** Closes idle connections and refuses further calls. */
  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) {
      clearTimeout(c.idleTimer);
      c.dead = true;
      c.socket?.end();
      this.open--;
    }
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}
