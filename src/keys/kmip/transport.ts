// Where a KMIP key server is and how to authenticate to it (mutual TLS 1.2+), and the translation of network
// and TLS failures into AtrestErrors naming host:port (never certificate or key bytes).
import { AtrestError } from '../../errors/index.js';

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
  /** Connections kept to the server at most (one request in flight on each); default 4. */
  maxConnections?: number;
  /** An unused connection is closed after this long; default 5 s. Idle connections never keep the process alive. */
  idleMs?: number;
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

export const UNREACHABLE_HINT =
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
