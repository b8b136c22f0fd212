// Typed errors with stable codes, shared by every layer and translated at the boundaries (errno, exit code, JSON).

/**
 * Every error atrest reports on purpose has one of these codes. Codes are stable: scripts and the
 * control socket depend on them. Add new ones; never rename or renumber.
 */
export const ERROR_CODES = {
  // usage and environment
  USAGE: { exit: 2, errno: 'EINVAL' },
  NOT_ROOT: { exit: 3, errno: 'EPERM' },
  NO_FUSE: { exit: 3, errno: 'ENODEV' },
  MISSING_TOOL: { exit: 3, errno: 'ENOENT' },
  FIPS_UNAVAILABLE: { exit: 3, errno: 'EPERM' },
  // files and images
  FILE_NOT_FOUND: { exit: 4, errno: 'ENOENT' },
  FILE_EXISTS: { exit: 4, errno: 'EEXIST' },
  IO: { exit: 4, errno: 'EIO' },
  READ_ONLY: { exit: 4, errno: 'EROFS' },
  NO_SPACE: { exit: 4, errno: 'ENOSPC' },
  // format
  NOT_LUKS2: { exit: 5, errno: 'EINVAL' },
  CORRUPT_HEADER: { exit: 5, errno: 'EIO' },
  TRUNCATED_IMAGE: { exit: 5, errno: 'EIO' },
  UNSUPPORTED: { exit: 5, errno: 'EOPNOTSUPP' },
  REENCRYPT_IN_PROGRESS: { exit: 5, errno: 'EBUSY' },
  // keys
  WRONG_KEY: { exit: 6, errno: 'EACCES' },
  WEAK_KEY: { exit: 6, errno: 'EINVAL' },
  KEY_UNAVAILABLE: { exit: 6, errno: 'EACCES' },
  /** A token or --kek names a key provider this host's providers.json does not configure. */
  KEK_NOT_CONFIGURED: { exit: 6, errno: 'EACCES' },
  /** A key derivation needs more memory or time than the configured KDF budget (kdf-limits.ts). */
  KDF_BUDGET: { exit: 6, errno: 'ETIMEDOUT' },
  /**
   * A KMIP key server cannot be reached: connection refused, network error, TLS handshake cut, or no answer
   * within the timeout. Not a revocation: volumes stay open for the grace period. The message names
   * host:port.
   */
  KEY_SERVER_UNREACHABLE: { exit: 6, errno: 'EHOSTUNREACH' },
  /** The KMIP key server refused this host's client certificate, or its own certificate is not trusted. */
  KEY_SERVER_REFUSED: { exit: 6, errno: 'EACCES' },
  /** The KMIP key server sent a malformed message, or a failure that says nothing about the key's state. */
  KEY_SERVER_ERROR: { exit: 6, errno: 'EPROTO' },
  // busy / state
  IMAGE_BUSY: { exit: 7, errno: 'EBUSY' },
  NAME_IN_USE: { exit: 7, errno: 'EBUSY' },
  /** A key version some volume still needs (e.g. deleting a platform KEK version). */
  KEY_IN_USE: { exit: 7, errno: 'EBUSY' },
  NOT_OPEN: { exit: 8, errno: 'ENOENT' },
  LOCKED: { exit: 8, errno: 'EIO' },
  // daemon
  DAEMON_UNAVAILABLE: { exit: 9, errno: 'ECONNREFUSED' },
  TIMEOUT: { exit: 10, errno: 'ETIMEDOUT' },
  // a bug: something we did not expect
  INTERNAL: { exit: 70, errno: 'EIO' },
} as const satisfies Record<string, { exit: number; errno: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface AtrestErrorOptions {
  /** What the user can do about it, one short sentence. */
  hint?: string;
  /** The file the error is about, if any. */
  path?: string;
  cause?: unknown;
}

/**
 * An error atrest means to report. The message says what is wrong (never key material or plaintext);
 * `hint` says what to do. Boundaries turn it into an errno, an exit code or a JSON object.
 */
export class AtrestError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly path: string | undefined;

  constructor(code: ErrorCode, message: string, options: AtrestErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AtrestError';
    this.code = code;
    this.hint = options.hint;
    this.path = options.path;
  }

  /** One line for a terminal: message, then the hint. */
  oneLine(): string {
    return this.hint ? `${this.message}; ${this.hint}` : this.message;
  }

  toJSON(): AtrestErrorJSON {
    const out: AtrestErrorJSON = { code: this.code, message: this.message };
    if (this.hint !== undefined) out.hint = this.hint;
    if (this.path !== undefined) out.path = this.path;
    return out;
  }

  static fromJSON(json: AtrestErrorJSON): AtrestError {
    const code: ErrorCode = isErrorCode(json.code) ? json.code : 'INTERNAL';
    const opts: AtrestErrorOptions = {};
    if (json.hint !== undefined) opts.hint = json.hint;
    if (json.path !== undefined) opts.path = json.path;
    return new AtrestError(code, json.message, opts);
  }
}

export interface AtrestErrorJSON {
  code: string;
  message: string;
  hint?: string;
  path?: string;
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

export function isAtrestError(err: unknown): err is AtrestError {
  return err instanceof AtrestError;
}

/** The documented process exit code for an error (70 for anything unexpected). */
export function exitCodeOf(err: unknown): number {
  return isAtrestError(err) ? ERROR_CODES[err.code].exit : ERROR_CODES.INTERNAL.exit;
}

/** The errno name a filesystem operation should fail with. */
export function errnoOf(err: unknown): string {
  if (isAtrestError(err)) return ERROR_CODES[err.code].errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  return 'EIO';
}

/**
 * Wraps a Node fs error about `path` into an AtrestError with a useful message. Anything that is not
 * a system error is returned unchanged.
 */
export function fromSystemError(err: unknown, path: string, what: string): unknown {
  if (isAtrestError(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ENOENT':
      return new AtrestError('FILE_NOT_FOUND', `${what} ${path} does not exist`, {
        path,
        hint: 'check the path',
        cause: err,
      });
    case 'EEXIST':
      return new AtrestError('FILE_EXISTS', `${what} ${path} already exists`, {
        path,
        hint: 'choose another path or remove it first',
        cause: err,
      });
    case 'EACCES':
    case 'EPERM':
      return new AtrestError('NOT_ROOT', `no permission to access ${what} ${path}`, {
        path,
        hint: 'run atrest as root',
        cause: err,
      });
    case 'EROFS':
      return new AtrestError('READ_ONLY', `${what} ${path} is on a read-only filesystem`, {
        path,
        cause: err,
      });
    case 'ENOSPC':
      return new AtrestError('NO_SPACE', `no space left writing ${what} ${path}`, { path, cause: err });
    case 'EISDIR':
      return new AtrestError('USAGE', `${what} ${path} is a directory`, { path, cause: err });
    default:
      if (typeof code === 'string')
        return new AtrestError('IO', `${what} ${path}: ${code}`, { path, cause: err });
      return err;
  }
}
