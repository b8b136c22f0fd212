// One KMIP request/response exchange with a key server over mutual TLS (node:tls, TLS 1.2 or later), with a
// deadline, a response size limit, and network/TLS failures translated into AtrestErrors naming host:port.
import { connect, type TLSSocket } from 'node:tls';
import { AtrestError } from '../../errors/index.js';
import { MAX_MESSAGE_BYTES, ttlvMessageLength } from './ttlv.js';

export interface KmipEndpoint {
  host: string;
  port: number;
  /** PEM CA certificate(s) the key server's certificate must chain to. */
  ca: Buffer;
  /** PEM client certificate (extendedKeyUsage clientAuth) and its private key. */
  cert: Buffer;
  key: Buffer;
  /** Deadline for one whole operation (connect, handshake, request, response); default 10 s. */
  timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 10_000;

/** Alerts a TLS server sends when it does not accept the client's certificate. */
const CLIENT_CERT_ALERTS = [
  'ALERT_BAD_CERTIFICATE',
  'ALERT_UNKNOWN_CA',
  'ALERT_CERTIFICATE_UNKNOWN',
  'ALERT_CERTIFICATE_REQUIRED',
  'ALERT_CERTIFICATE_EXPIRED',
  'ALERT_CERTIFICATE_REVOKED',
  'ALERT_UNSUPPORTED_CERTIFICATE',
  'ALERT_ACCESS_DENIED',
  'ALERT_DECRYPT_ERROR',
];
/** Node/OpenSSL codes for a server certificate this client does not trust. */
const SERVER_CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const UNREACHABLE_HINT =
  'check the network and that the key server is running; volumes stay open within the grace period';

/** host:port, with brackets around an IPv6 address. */
export const address = (ep: Pick<KmipEndpoint, 'host' | 'port'>): string =>
  ep.host.includes(':') ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;

/** Turns a socket/TLS error into the AtrestError it means. Never includes certificate or key bytes. */
export function classifyTlsError(err: unknown, ep: KmipEndpoint): AtrestError {
  if (err instanceof AtrestError) return err;
  const where = address(ep);
  const rawCode = (err as { code?: unknown } | null)?.code;
  const code = typeof rawCode === 'string' ? rawCode : '';
  const msg = err instanceof Error ? err.message : String(err);
  if (CLIENT_CERT_ALERTS.some((a) => code.endsWith(a)))
    return new AtrestError(
      'KEY_SERVER_REFUSED',
      `key server ${where} refused this host's client certificate (${code})`,
      {
        hint: "check the kmip provider's client certificate: signed by a CA the server trusts, extendedKeyUsage clientAuth, not expired",
        cause: err,
      },
    );
  if (SERVER_CERT_CODES.has(code))
    return new AtrestError(
      'KEY_SERVER_REFUSED',
      `the certificate of key server ${where} is not trusted (${code})`,
      {
        hint: "check the kmip provider's CA file and that the server certificate names this host or address",
        cause: err,
      },
    );
  if (/^ERR_OSSL/.test(code) || /PEM|key values mismatch|no start line/i.test(msg))
    return new AtrestError(
      'USAGE',
      `cannot use the client certificate or key for key server ${where}: ${code || msg}`,
      {
        hint: "check that the kmip provider's cert and key files are PEM and belong together",
        cause: err,
      },
    );
  return new AtrestError('KEY_SERVER_UNREACHABLE', `key server ${where} unreachable: ${code || msg}`, {
    hint: UNREACHABLE_HINT,
    cause: err,
  });
}

/**
 * Sends one request message and returns the raw response message (a Buffer the caller wipes), on a fresh
 * connection that is closed afterwards. Every failure is an AtrestError; the deadline covers everything.
 */
export function exchange(ep: KmipEndpoint, request: Buffer): Promise<Buffer> {
  const timeoutMs = ep.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const where = address(ep);
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let total = -1;
    let handshakeDone = false;
    let settled = false;
    let socket: TLSSocket | undefined;
    const finish = (err: AtrestError | undefined, out?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      for (const c of chunks) c.fill(0);
      chunks.length = 0;
      socket?.destroy();
      if (err) reject(err);
      else resolve(out!);
    };
    const timer = setTimeout(() => {
      finish(
        new AtrestError(
          'KEY_SERVER_UNREACHABLE',
          `key server ${where} unreachable: no answer within ${timeoutMs} ms`,
          {
            hint: UNREACHABLE_HINT,
          },
        ),
      );
    }, timeoutMs);
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
      finish(classifyTlsError(err, ep));
      return;
    }
    socket.on('secureConnect', () => {
      handshakeDone = true;
      socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      try {
        if (total < 0 && received >= 8) {
          const head = chunks.length === 1 ? chunk : Buffer.concat(chunks);
          total = ttlvMessageLength(head.subarray(0, 8), MAX_MESSAGE_BYTES);
          if (head !== chunk) head.fill(0);
        }
        if (total >= 0 && received > total)
          throw new AtrestError(
            'KEY_SERVER_ERROR',
            `key server ${where} sent ${received - total} bytes after its response`,
            {
              hint: 'check that the address is a KMIP server',
            },
          );
      } catch (err) {
        finish(classifyTlsError(err, ep));
        return;
      }
      if (total >= 0 && received === total) finish(undefined, Buffer.concat(chunks, total));
    });
    socket.on('error', (err) => finish(classifyTlsError(err, ep)));
    socket.on('close', () => {
      // A close without a TLS alert is not proof of a refused certificate (a server going down looks the
      // same), so it counts as unreachable; the message says what else it may be.
      const got = received > 0 ? ` after ${received} of ${total < 0 ? '?' : total} bytes` : '';
      finish(
        new AtrestError(
          'KEY_SERVER_UNREACHABLE',
          handshakeDone
            ? `key server ${where} unreachable: it closed the connection${got} before answering`
            : `key server ${where} unreachable: it closed the connection during the TLS handshake (or refused this host's client certificate without saying why)`,
          { hint: UNREACHABLE_HINT },
        ),
      );
    });
  });
}
