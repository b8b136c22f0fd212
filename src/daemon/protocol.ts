// The control-socket protocol: one JSON object per line each way (secrets as raw bytes after it, see framing.ts), errors as {code, message, hint}.
import { AtrestError, type AtrestErrorJSON } from '../errors/index.js';
import type { ConvertProgress } from '../volume/index.js';

export interface OpenRequest {
  op: 'open';
  image: string;
  name: string;
  /** Absolute path of the key file; the daemon reads it itself so the key never crosses the socket. */
  keyFile?: string;
  /**
   * The passphrase when it came from standard input: travels as raw secret bytes after the JSON line
   * (framing.ts), never in JSON; the daemon wipes it after the open.
   */
  passphrase?: Buffer;
  header?: string;
  readOnly: boolean;
  loop: boolean;
  /** Bench only: serve the image unencrypted. Refused unless the daemon runs with ATREST_BENCH_PLAIN=1. */
  benchPlain?: boolean;
  /** KEK URI given at open (e.g. with a PIN); used when it names the key of the volume's token. */
  kek?: string;
  /** Platform key store directory (--key-store). */
  keyStore?: string;
  /** KEK provider configuration file (--providers). */
  providers?: string;
  /** FIPS mode for this volume: only PBKDF2 keyslots. */
  fips?: boolean;
  /** Throttle of an in-place conversion started or resumed by this open (bytes/s). */
  maxRate?: number;
  /**
   * true (open --encrypt, configuration "encrypt": true): encrypt a plaintext image in place before
   * serving it. Otherwise an image without a LUKS2 header is refused (a started conversion resumes).
   */
  encrypt?: boolean;
}

/** The `encryption` block of status: always on; who holds the key; locked after a revocation. */
export interface EncryptionStatus {
  enabled: boolean;
  cipher: string;
  keySource: 'platform' | 'customer' | 'passphrase';
  /** KEK URI without secrets, or null for a passphrase/key-file unlock. */
  kek: string | null;
  kekVersion: number | null;
  keyslot: number;
  locked: boolean;
  lockedReason?: string;
  lockedAt?: string;
  /** Its key server cannot be reached: the volume stays open until locksAt unless a check reaches it. */
  keyServerUnreachable?: { since: string; locksAt: string; detail: string };
}

export type Request =
  | { op: 'ping' }
  | OpenRequest
  | { op: 'close'; name: string }
  | { op: 'status'; name?: string }
  | { op: 'convert'; name: string; action: 'pause' | 'resume' }
  | {
      op: 'reencrypt';
      name: string;
      keyFiles: string[];
      maxRate?: number;
      /** Passphrases from standard input (raw secret bytes after the JSON line, never JSON); wiped after use. */
      passphrases?: Buffer[];
    }
  | { op: 'shutdown' };

export interface VolumeStatus {
  name: string;
  /** served, locked, encrypting N%, re-encrypting N%, or failed (configured volumes; see error). */
  state: string;
  error?: string;
  /** Where the daemon mounted its filesystem (configured volumes), or null. */
  mountPoint: string | null;
  /** From the configuration file (rather than an `atrest open`). */
  configured: boolean;
  diskPath: string;
  image: string;
  header: string;
  uuid: string;
  cipher: string;
  sectorSize: number;
  size: number;
  keyslot: number;
  readOnly: boolean;
  loopDevice: string | null;
  /** The FUSE backend serving the disk file (kernel, or the libfuse fallback); absent when not open. */
  fuseBackend?: 'kernel' | 'libfuse';
  bytesRead: number;
  bytesWritten: number;
  openedAt: string;
  encryption: EncryptionStatus;
  /** An in-place conversion of this volume (encrypt, reencrypt) and its progress. */
  conversion?: ConvertProgress;
}

/**
 * A result whose secrets (e.g. new recovery passphrases) go back as raw bytes after the JSON line
 * (framing.ts), in order; the server wipes them once written.
 */
export class SecretReply {
  constructor(
    readonly result: unknown,
    readonly secrets: Buffer[],
  ) {}
}

/** What a reencrypt answers: how many new recovery passphrases follow as secrets. */
export interface ReencryptResult {
  recoveryKeys: number;
}

export interface PingResult {
  pid: number;
  version: string;
  volumes: number;
}

export type Response =
  { id: number; ok: true; result: unknown } | { id: number; ok: false; error: AtrestErrorJSON };

export interface Envelope {
  id: number;
  request: Request;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) {
    throw new AtrestError('USAGE', `request field ${what} must be a non-empty string`);
  }
  return v;
}

/** An optional throttle in bytes per second (a non-negative integer); anything else is ignored. */
function optRate(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

function optStr(v: unknown, what: string): string | undefined {
  return v === undefined || v === null ? undefined : str(v, what);
}

/**
 * Validates a decoded line from a client and attaches the secrets that followed it (framing.ts): the
 * passphrase of an open, the passphrases of a reencrypt; other requests take none. Throws
 * AtrestError('USAGE') on anything malformed. The caller wipes `secrets` after the request.
 */
export function parseEnvelope(value: unknown, secrets: readonly Buffer[] = []): Envelope {
  if (typeof value !== 'object' || value === null) throw new AtrestError('USAGE', 'request is not an object');
  const o = value as Record<string, unknown>;
  const id = o.id;
  if (typeof id !== 'number' || !Number.isSafeInteger(id))
    throw new AtrestError('USAGE', 'request id missing');
  const r = o.request;
  if (typeof r !== 'object' || r === null) throw new AtrestError('USAGE', 'request body missing');
  const q = r as Record<string, unknown>;
  const takes = q.op === 'open' ? 1 : q.op === 'reencrypt' ? Infinity : 0;
  if (secrets.length > takes) {
    throw new AtrestError(
      'USAGE',
      `request ${String(q.op)} carries ${secrets.length} secrets; it takes ${takes}`,
    );
  }
  switch (q.op) {
    case 'ping':
    case 'shutdown':
      return { id, request: { op: q.op } };
    case 'close':
      return { id, request: { op: 'close', name: str(q.name, 'name') } };
    case 'convert': {
      const action = q.action === 'pause' || q.action === 'resume' ? q.action : null;
      if (action === null) throw new AtrestError('USAGE', 'convert action must be pause or resume');
      return { id, request: { op: 'convert', name: str(q.name, 'name'), action } };
    }
    case 'reencrypt': {
      const files = Array.isArray(q.keyFiles) ? q.keyFiles.map((f, i) => str(f, `keyFiles[${i}]`)) : [];
      const req: Request = { op: 'reencrypt', name: str(q.name, 'name'), keyFiles: files };
      const maxRate = optRate(q.maxRate);
      if (maxRate !== undefined) req.maxRate = maxRate;
      if (secrets.length > 0) req.passphrases = [...secrets];
      return { id, request: req };
    }
    case 'status': {
      const name = optStr(q.name, 'name');
      return { id, request: name === undefined ? { op: 'status' } : { op: 'status', name } };
    }
    case 'open': {
      const req: OpenRequest = {
        op: 'open',
        image: str(q.image, 'image'),
        name: str(q.name, 'name'),
        readOnly: q.readOnly === true,
        loop: q.loop === true,
      };
      if (q.benchPlain === true) req.benchPlain = true;
      const keyFile = optStr(q.keyFile, 'keyFile');
      const header = optStr(q.header, 'header');
      if (q.keyData !== undefined) {
        throw new AtrestError(
          'USAGE',
          'keyData (a passphrase inside the JSON request) is no longer accepted',
          {
            hint: 'use the atrest command of the same version as the daemon',
          },
        );
      }
      if (keyFile !== undefined) req.keyFile = keyFile;
      if (secrets[0] !== undefined) {
        if (keyFile !== undefined)
          throw new AtrestError('USAGE', 'give either keyFile or a passphrase, not both');
        req.passphrase = secrets[0];
      }
      if (header !== undefined) req.header = header;
      const kek = optStr(q.kek, 'kek');
      const keyStore = optStr(q.keyStore, 'keyStore');
      if (kek !== undefined) req.kek = kek;
      if (keyStore !== undefined) req.keyStore = keyStore;
      const providers = optStr(q.providers, 'providers');
      if (providers !== undefined) req.providers = providers;
      if (q.fips === true) req.fips = true;
      if (q.encrypt === true) req.encrypt = true;
      const maxRate = optRate(q.maxRate);
      if (maxRate !== undefined) req.maxRate = maxRate;
      return { id, request: req };
    }
    default:
      throw new AtrestError('USAGE', `unknown request op ${JSON.stringify(q.op)}`);
  }
}
