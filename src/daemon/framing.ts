// Control-socket framing: one JSON line per message, then (when it announces them) raw secret bytes that never become JSON or strings.
import { Buffer } from 'node:buffer';
import { AtrestError, type ErrorCode } from '../errors/index.js';

/**
 * Wire format of one message:
 *
 *   {"id":1,...,"secretLengths":[N1,N2]}\n  <N1 raw bytes><N2 raw bytes>\n
 *
 * The JSON line never holds secret material (passphrases, recovery keys); it only announces how many
 * raw bytes follow. The reader copies those bytes straight from the socket's chunks into Buffers of
 * the announced sizes and zeroes the chunks; they are never decoded, parsed or turned into strings.
 * A message with secrets ends with one more "\n" after them, so a wrong announced length is caught
 * (the byte after the secrets is not "\n", or the stream ends inside them) instead of spilling
 * secret bytes into the next JSON line. A message without secrets is a plain JSON line.
 */
export const SECRET_LENGTHS_FIELD = 'secretLengths';
/** Longest JSON line accepted (the line itself carries no secrets). */
export const MAX_LINE_BYTES = 1 << 20;
/** Largest single secret (a key file is at most 8 MiB for cryptsetup; atrest passphrases are far smaller). */
export const MAX_SECRET_BYTES = 8 << 20;
/** Most secrets one message may carry. */
export const MAX_SECRETS = 32;

const NL = 0x0a;

/** One decoded message: the JSON object (without secretLengths) and its secrets, which the receiver wipes. */
export interface Frame {
  message: Record<string, unknown>;
  secrets: Buffer[];
}

/** JSON.stringify replacer that refuses byte arrays: secrets go after the line, never into it. */
function noBytes(this: unknown, key: string, value: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key];
  if (raw instanceof Uint8Array || ArrayBuffer.isView(raw) || raw instanceof ArrayBuffer) {
    throw new AtrestError('INTERNAL', `refusing to put bytes (field ${key}) into a JSON control message`);
  }
  return value;
}

/**
 * Encodes one message and its secrets as a single Buffer (copies the secrets: the caller keeps and
 * wipes its own). Wipe the result once written (see writeFrame).
 */
export function encodeFrame(message: Record<string, unknown>, secrets: readonly Uint8Array[] = []): Buffer {
  if (SECRET_LENGTHS_FIELD in message)
    throw new AtrestError('INTERNAL', `message already has ${SECRET_LENGTHS_FIELD}`);
  if (secrets.length > MAX_SECRETS)
    throw new AtrestError('INTERNAL', `more than ${MAX_SECRETS} secrets in one message`);
  for (const s of secrets) {
    if (s.length > MAX_SECRET_BYTES)
      throw new AtrestError('USAGE', `a secret of ${s.length} bytes is too long`);
  }
  const body =
    secrets.length === 0 ? message : { ...message, [SECRET_LENGTHS_FIELD]: secrets.map((s) => s.length) };
  const head = Buffer.from(`${JSON.stringify(body, noBytes)}\n`, 'utf8');
  if (secrets.length === 0) return head;
  const total = head.length + secrets.reduce((n, s) => n + s.length, 0) + 1;
  const out = Buffer.alloc(total);
  let off = head.copy(out, 0);
  for (const s of secrets) {
    out.set(s, off);
    off += s.length;
  }
  out[off] = NL;
  return out;
}

/** What writeFrame needs of a socket. */
export interface FrameSink {
  write(data: Uint8Array, cb: (err?: Error | null) => void): boolean;
}

/**
 * Writes one message with its secrets and zeroes the encoded copy once the socket has taken it (the
 * write callback: until then the kernel write may still read it). The caller wipes its own secrets.
 */
export function writeFrame(
  sink: FrameSink,
  message: Record<string, unknown>,
  secrets: readonly Uint8Array[] = [],
): Promise<void> {
  const frame = encodeFrame(message, secrets);
  return new Promise((resolve, reject) => {
    try {
      sink.write(frame, (err) => {
        frame.fill(0);
        if (err) reject(err);
        else resolve();
      });
    } catch (err) {
      frame.fill(0);
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

function wipeAll(bufs: readonly Buffer[]): void {
  for (const b of bufs) b.fill(0);
}

/**
 * Splits a byte stream into frames. push() every chunk (it is zeroed after use), end() when the
 * stream ends. Frames go to `onFrame`; the first framing error goes to `onError` (an AtrestError with
 * `code`), after which the reader ignores everything and holds nothing.
 */
export class FrameReader {
  #state: 'header' | 'secrets' | 'terminator' | 'failed' = 'header';
  #head: Buffer[] = [];
  #headBytes = 0;
  #message: Record<string, unknown> | null = null;
  #secrets: Buffer[] = [];
  #index = 0;
  #filled = 0;

  constructor(
    private readonly onFrame: (frame: Frame) => void,
    private readonly onError: (err: AtrestError) => void,
    private readonly code: ErrorCode = 'USAGE',
    private readonly what = 'control message',
  ) {}

  /** Consumes a chunk; zeroes it afterwards (it may hold secret bytes). */
  push(chunk: Buffer): void {
    try {
      this.#consume(chunk);
    } finally {
      chunk.fill(0);
    }
  }

  /** The stream ended: an error if it ended inside a frame. */
  end(): void {
    if (this.#state === 'failed') return;
    if (this.#state === 'secrets' || this.#state === 'terminator') {
      const announced = this.#secrets.reduce((n, s) => n + s.length, 0);
      const got = this.#secrets.slice(0, this.#index).reduce((n, s) => n + s.length, 0) + this.#filled;
      this.#fail(
        `${this.what} announced ${announced} secret bytes but the connection ended after ${got}${this.#state === 'terminator' ? ' (without the closing newline)' : ''}`,
      );
    } else if (this.#headBytes > 0) {
      this.#fail(`${this.what} ended inside its JSON line`);
    }
  }

  /** Drops whatever a partial frame holds (secrets are zeroed). */
  destroy(): void {
    wipeAll(this.#secrets);
    this.#secrets = [];
    this.#head = [];
    this.#headBytes = 0;
    this.#message = null;
    this.#state = 'failed';
  }

  #fail(message: string): void {
    this.destroy();
    this.onError(new AtrestError(this.code, message));
  }

  #consume(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.#state) {
        case 'failed':
          return;
        case 'header': {
          const nl = chunk.indexOf(NL, pos);
          const end = nl < 0 ? chunk.length : nl;
          if (this.#headBytes + (end - pos) > MAX_LINE_BYTES) {
            this.#fail(`${this.what} is longer than ${MAX_LINE_BYTES} bytes`);
            return;
          }
          // only the JSON line is copied here; it never holds secret bytes
          this.#head.push(Buffer.from(chunk.subarray(pos, end)));
          this.#headBytes += end - pos;
          if (nl < 0) return;
          pos = nl + 1;
          if (!this.#startFrame()) return;
          break;
        }
        case 'secrets': {
          const target = this.#secrets[this.#index] as Buffer;
          const n = Math.min(target.length - this.#filled, chunk.length - pos);
          chunk.copy(target, this.#filled, pos, pos + n);
          this.#filled += n;
          pos += n;
          this.#nextSecret();
          break;
        }
        case 'terminator': {
          if (chunk[pos] !== NL) {
            this.#fail(
              `${this.what}: its secrets are longer than the ${this.#secrets.reduce((n, s) => n + s.length, 0)} bytes announced`,
            );
            return;
          }
          pos++;
          this.#emit();
          break;
        }
      }
    }
  }

  /** Parses the JSON line; returns false after a failure. */
  #startFrame(): boolean {
    const line = Buffer.concat(this.#head).toString('utf8');
    this.#head = [];
    this.#headBytes = 0;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      this.#fail(`${this.what} is not JSON`);
      return false;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.#fail(`${this.what} is not a JSON object`);
      return false;
    }
    const message = value as Record<string, unknown>;
    const lengths = message[SECRET_LENGTHS_FIELD];
    delete message[SECRET_LENGTHS_FIELD];
    if (lengths === undefined) {
      this.#message = message;
      this.#emit();
      return true;
    }
    if (
      !Array.isArray(lengths) ||
      lengths.length > MAX_SECRETS ||
      !lengths.every(
        (n) => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && n <= MAX_SECRET_BYTES,
      )
    ) {
      this.#fail(
        `${this.what}: ${SECRET_LENGTHS_FIELD} must be a list of at most ${MAX_SECRETS} byte counts of 0 to ${MAX_SECRET_BYTES}`,
      );
      return false;
    }
    this.#message = message;
    this.#secrets = (lengths as number[]).map((n) => Buffer.alloc(n));
    this.#index = 0;
    this.#filled = 0;
    this.#state = 'secrets';
    this.#nextSecret();
    return true;
  }

  /** Skips to the first secret not yet full; after the last, expects the closing newline. */
  #nextSecret(): void {
    while (
      this.#index < this.#secrets.length &&
      this.#filled === (this.#secrets[this.#index] as Buffer).length
    ) {
      this.#index++;
      this.#filled = 0;
    }
    if (this.#index === this.#secrets.length) this.#state = 'terminator';
  }

  #emit(): void {
    const frame: Frame = { message: this.#message ?? {}, secrets: this.#secrets };
    this.#message = null;
    this.#secrets = [];
    this.#index = 0;
    this.#filled = 0;
    this.#state = 'header';
    this.onFrame(frame);
  }
}
