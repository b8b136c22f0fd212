// A decrypted view of a LUKS2 data segment: random-access plaintext reads and writes over an encrypted image file.
import { Buffer } from 'node:buffer';
import { open, type FileHandle } from 'node:fs/promises';
import { AtrestError, fromSystemError } from '../errors/index.js';
import type { SectorCipher } from './cipher.js';
import { RangeLock } from './range-lock.js';

/** XTS tweaks count 512-byte units whatever the sector size. */
const TWEAK_UNIT = 512;
const SECTOR_SIZES: readonly number[] = [512, 1024, 2048, 4096];
/** Requests are cut into batches of at most this many bytes (whole sectors). */
export const VOLUME_BATCH_BYTES = 256 * 1024;
/** Batches of one request in flight at once: crypto of one overlaps I/O of the next. */
const BATCHES_IN_FLIGHT = 4;
/** Read-ahead works in chunks of the largest FUSE request (libfuse2: 128 KiB). */
const READ_AHEAD_CHUNK = 128 * 1024;

export interface VolumeOptions {
  /** The encrypted image (or raw file for PlainCipher). */
  imagePath: string;
  /** Byte offset of the data segment in the image. */
  dataOffset: number;
  /** Bytes of plaintext the volume exposes; whole sectors. */
  dataSize: number;
  /** Encryption sector size: 512, 1024, 2048 or 4096. */
  sectorSize: number;
  /** Added to every tweak (LUKS2 segment iv_tweak), in 512-byte units. */
  ivTweak: number;
  cipher: SectorCipher;
  readOnly: boolean;
  /**
   * Write-behind window (default 0: off). When set, write() returns once the data is copied and its
   * sectors are locked, like a disk's write cache; encryption and the image write complete in the
   * background, at most this many bytes at once. fsync() waits for them and reports a failed one;
   * reads and writes that overlap a pending write wait for it (range locks), so they always see it.
   */
  writeBehindBytes?: number;
  /** Sequential read-ahead window (default 0: off), in 128 KiB chunks; see Volume.read. */
  readAheadBytes?: number;
  /**
   * An in-place conversion under way (see convert.ts): data below `front` still lives in the source
   * layout (its own offset and cipher: plaintext, or the old key); data at or above it is converted.
   * The converter moves the front with setConversionFront() while it holds the range exclusively.
   */
  conversion?: ConversionSplit;
}

/** Where unconverted data lives during an in-place conversion. */
export interface ConversionSplit {
  front: number;
  sourceOffset: number;
  sourceCipher: SectorCipher;
}

export interface VolumeCounters {
  bytesRead: number;
  bytesWritten: number;
  readOps: number;
  writeOps: number;
}

function assertUint(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new AtrestError('USAGE', `${what} must be a non-negative integer, got ${String(n)}`);
  }
}

/**
 * Plaintext random access over the data segment of an encrypted image. Any offset and length:
 * partial sectors are read, decrypted, patched, encrypted and written back under an exclusive
 * sector-range lock, so concurrent overlapping writes never lose each other's bytes; reads take
 * the range shared. Only fs/promises is used (the serving process also answers FUSE requests).
 */
export class Volume {
  readonly size: number;
  readonly readOnly: boolean;
  readonly sectorSize: number;
  readonly imagePath: string;
  readonly #dataOffset: number;
  readonly #ivTweak: number;
  #cipher: SectorCipher;
  readonly #fh: FileHandle;
  readonly #locks = new RangeLock();
  readonly #counters: VolumeCounters = { bytesRead: 0, bytesWritten: 0, readOps: 0, writeOps: 0 };
  #lockedReason: string | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  #inFlight = 0;
  #completed = 0;
  #busyNs = 0;
  readonly #writeBehindBytes: number;
  #pendingBytes = 0;
  readonly #pending = new Set<Promise<void>>();
  readonly #roomWaiters: Array<() => void> = [];
  #writeError: Error | null = null;
  #admission: Promise<void> = Promise.resolve();
  readonly #readAheadChunks: number;
  readonly #ahead = new Map<number, Promise<Buffer | null>>();
  #writeGen = 0;
  #lastReadEnd = -1;
  #drained: Array<() => void> = [];
  #split: ConversionSplit | null;

  private constructor(opts: VolumeOptions, fh: FileHandle) {
    this.imagePath = opts.imagePath;
    this.size = opts.dataSize;
    this.readOnly = opts.readOnly;
    this.sectorSize = opts.sectorSize;
    this.#dataOffset = opts.dataOffset;
    this.#ivTweak = opts.ivTweak;
    this.#cipher = opts.cipher;
    this.#fh = fh;
    this.#writeBehindBytes = opts.writeBehindBytes ?? 0;
    this.#readAheadChunks = Math.ceil((opts.readAheadBytes ?? 0) / READ_AHEAD_CHUNK);
    this.#split = opts.conversion === undefined ? null : { ...opts.conversion };
  }

  /** Whether any read, write or flush is in flight (the converter lets those go first). */
  get busy(): boolean {
    return this.#inFlight > 0 || this.#pending.size > 0;
  }

  /** Foreground counters for the converter's yielding (see yield-controller.ts): in flight, done, summed ns. */
  foreground(): { inFlight: number; completed: number; busyNs: number } {
    return { inFlight: this.#inFlight, completed: this.#completed, busyNs: this.#busyNs };
  }

  /** The conversion front (bytes), or null when no conversion is under way. */
  get conversionFront(): number | null {
    return this.#split?.front ?? null;
  }

  /**
   * Moves the conversion front (the caller holds [front, old front) exclusively through
   * lockRange, and the data there is durable in the target layout); 0 ends the conversion.
   */
  setConversionFront(front: number): void {
    assertUint(front, 'conversion front');
    if (this.#split === null) {
      if (front === 0) return;
      throw new AtrestError('INTERNAL', 'no conversion under way');
    }
    this.#split.front = front;
    if (front === 0) this.#split = null;
  }

  /**
   * Starts an in-place conversion of an open volume (reencrypt): waits for every read and write in
   * flight (the whole range taken exclusively), then serves [0, split.front) through the source layout
   * and the rest through `target`. Returns the cipher it replaced.
   */
  async beginConversion(target: SectorCipher, split: ConversionSplit): Promise<SectorCipher> {
    this.#checkUsable();
    await this.#drainWrites();
    const release = await this.#locks.acquire(0, this.size, true);
    try {
      const old = this.#cipher;
      this.#dropReadAhead();
      this.#cipher = target;
      this.#split = { ...split };
      return old;
    } finally {
      release();
    }
  }

  /** Takes [first, last) (sector aligned) exclusively: reads and writes there wait until release. */
  lockRange(first: number, last: number): Promise<() => void> {
    return this.#locks.acquire(first, last, true);
  }

  /** Opens the image (read-write unless readOnly) and checks it holds the whole data segment. */
  static async open(opts: VolumeOptions): Promise<Volume> {
    if (!SECTOR_SIZES.includes(opts.sectorSize)) {
      throw new AtrestError(
        'UNSUPPORTED',
        `sector size ${opts.sectorSize} is not one of 512, 1024, 2048, 4096`,
      );
    }
    assertUint(opts.dataOffset, 'data offset');
    assertUint(opts.dataSize, 'data size');
    assertUint(opts.ivTweak, 'iv tweak');
    assertUint(opts.writeBehindBytes ?? 0, 'write-behind window');
    assertUint(opts.readAheadBytes ?? 0, 'read-ahead window');
    if (opts.dataSize % opts.sectorSize !== 0) {
      throw new AtrestError(
        'UNSUPPORTED',
        `data size ${opts.dataSize} is not whole ${opts.sectorSize}-byte sectors`,
        { path: opts.imagePath },
      );
    }
    let fh: FileHandle;
    try {
      fh = await open(opts.imagePath, opts.readOnly ? 'r' : 'r+');
    } catch (err) {
      throw fromSystemError(err, opts.imagePath, 'image');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) {
        throw new AtrestError('USAGE', `image ${opts.imagePath} is not a regular file`, {
          path: opts.imagePath,
        });
      }
      if (st.size < opts.dataOffset + opts.dataSize) {
        throw new AtrestError(
          'TRUNCATED_IMAGE',
          `image ${opts.imagePath} is ${st.size} bytes, shorter than its data segment ends (${opts.dataOffset + opts.dataSize})`,
          { path: opts.imagePath, hint: 'the image was truncated; restore it from a backup' },
        );
      }
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw fromSystemError(err, opts.imagePath, 'image');
    }
    return new Volume(opts, fh);
  }

  /** A snapshot of the I/O counters. */
  get counters(): VolumeCounters {
    return { ...this.#counters };
  }

  /** Why the volume was locked, or null. */
  get lockedReason(): string | null {
    return this.#lockedReason;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Stops all I/O for good (the key is about to be revoked): every later call, and every write not
   * yet issued to the image, fails with LOCKED. Nothing more reaches the image.
   */
  lock(reason: string): void {
    if (this.#lockedReason === null) this.#lockedReason = reason || 'locked';
    this.#dropReadAhead();
  }

  /**
   * Resolves once no read, write or flush is in flight (after lock(), nothing new starts, so from
   * then on nothing reaches the image).
   */
  settle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#drained.push(resolve));
  }

  /**
   * Reads up to `length` bytes at `position`; fewer at the end of the volume, none past it.
   */
  async read(position: number, length: number): Promise<Buffer> {
    assertUint(position, 'read position');
    assertUint(length, 'read length');
    this.#checkUsable();
    const end = Math.min(this.size, position + length);
    if (end <= position) return Buffer.alloc(0);
    return this.#track(async () => {
      const out = (await this.#readAhead(position, end)) ?? (await this.#readRange(position, end));
      this.#counters.bytesRead += out.length;
      this.#counters.readOps++;
      return out;
    });
  }

  async #readRange(position: number, end: number): Promise<Buffer> {
    const ss = this.sectorSize;
    const first = position - (position % ss);
    const last = Math.ceil(end / ss) * ss;
    const out = Buffer.allocUnsafe(end - position);
    const release = await this.#locks.acquire(first, last, false);
    try {
      await this.#batches(first, last, async (bs, be) => {
        this.#checkUsable();
        const sectors = await this.#readSectors(bs, be);
        const from = Math.max(bs, position);
        const to = Math.min(be, end);
        sectors.copy(out, from - position, from - bs, to - bs);
        sectors.fill(0);
      });
    } finally {
      release();
    }
    return out;
  }

  /**
   * Sequential read-ahead: libfuse2 hands over one request at a time, so for a sequential reader the
   * next few chunks are read and decrypted while the current one travels back. Serves [position, end)
   * from a prefetched chunk when it can (null otherwise), and keeps the window ahead filled. Any
   * write drops every prefetched chunk (and a prefetch that raced a write is discarded), so readers
   * never see stale data; lock() and close() wipe them.
   */
  async #readAhead(position: number, end: number): Promise<Buffer | null> {
    if (this.#readAheadChunks === 0) return null;
    const c = position - (position % READ_AHEAD_CHUNK);
    const sequential = position === this.#lastReadEnd;
    this.#lastReadEnd = end;
    let out: Buffer | null = null;
    const cached = end <= c + READ_AHEAD_CHUNK ? this.#ahead.get(c) : undefined;
    if (cached) {
      const chunk = await cached;
      if (chunk) {
        this.#checkUsable();
        out = Buffer.from(chunk.subarray(position - c, end - c));
      }
    }
    if (sequential || out) {
      for (const [start, p] of this.#ahead) {
        if (start < c) {
          this.#ahead.delete(start);
          void p.then((b) => b?.fill(0));
        }
      }
      for (let i = 1; i <= this.#readAheadChunks; i++) {
        const start = c + i * READ_AHEAD_CHUNK;
        if (start >= this.size) break;
        if (!this.#ahead.has(start)) this.#ahead.set(start, this.#prefetch(start));
      }
    }
    return out;
  }

  #prefetch(start: number): Promise<Buffer | null> {
    const gen = this.#writeGen;
    const end = Math.min(this.size, start + READ_AHEAD_CHUNK);
    return this.#track(async () => {
      const release = await this.#locks.acquire(start, end, false);
      try {
        this.#checkUsable();
        const chunk = await this.#readSectors(start, end);
        if (gen === this.#writeGen) return chunk;
        chunk.fill(0);
        return null;
      } finally {
        release();
      }
    }).catch(() => null);
  }

  /** Drops (and wipes) every prefetched chunk. */
  #dropReadAhead(): void {
    this.#writeGen++;
    for (const p of this.#ahead.values()) void p.then((b) => b?.fill(0));
    this.#ahead.clear();
  }

  /**
   * Writes `data` at `position`. Returns the bytes written: all of them, or fewer when the volume
   * ends first. Fails with NO_SPACE when `position` is at or past the end and data is not empty.
   */
  async write(position: number, data: Buffer): Promise<number> {
    assertUint(position, 'write position');
    this.#checkUsable();
    if (this.readOnly) {
      throw new AtrestError('READ_ONLY', 'the volume is open read-only', { path: this.imagePath });
    }
    if (data.length === 0) return 0;
    if (position >= this.size) {
      throw new AtrestError(
        'NO_SPACE',
        `write at ${position} is past the end of the volume (${this.size} bytes)`,
      );
    }
    this.#throwWriteError();
    this.#dropReadAhead();
    const end = Math.min(this.size, position + data.length);
    const n = end - position;
    const ss = this.sectorSize;
    const first = position - (position % ss);
    const last = Math.ceil(end / ss) * ss;
    if (this.#writeBehindBytes === 0) {
      return this.#track(async () => {
        const release = await this.#locks.acquire(first, last, true);
        try {
          await this.#writeRange(position, end, data, first, last);
        } finally {
          release();
        }
        this.#countWrite(n);
        return n;
      });
    }
    // Write-behind: copy the data, take the range lock (so later overlapping reads and writes queue
    // behind this one), and acknowledge; encryption and the image write finish in the background.
    // fsync waits for them and reports a failure; at most writeBehindBytes are pending at once.
    const copy = Buffer.from(data.subarray(0, n));
    // Admission is FIFO, so writes take their locks in the order they were issued.
    const admitted = this.#admission.then(async () => {
      while (this.#pendingBytes > 0 && this.#pendingBytes + n > this.#writeBehindBytes) {
        await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
      }
      const lockRelease = await this.#locks.acquire(first, last, true);
      this.#pendingBytes += n;
      return lockRelease;
    });
    this.#admission = admitted.then(
      () => undefined,
      () => undefined,
    );
    const release = await admitted;
    const job = this.#track(async () => {
      try {
        await this.#writeRange(position, end, copy, first, last);
      } finally {
        release();
        copy.fill(0);
        this.#pendingBytes -= n;
        for (const wake of this.#roomWaiters.splice(0)) wake();
      }
    }).catch((err: unknown) => {
      this.#writeError ??= err instanceof Error ? err : new AtrestError('IO', String(err));
    });
    this.#pending.add(job);
    void job.finally(() => this.#pending.delete(job));
    this.#countWrite(n);
    return n;
  }

  #countWrite(n: number): void {
    this.#counters.bytesWritten += n;
    this.#counters.writeOps++;
  }

  /** Reports (once) a background write that failed since the last report. */
  #throwWriteError(): void {
    const err = this.#writeError;
    if (err !== null) {
      this.#writeError = null;
      throw err;
    }
  }

  /** Encrypts and writes [position, end) with the range [first, last) already locked. */
  async #writeRange(position: number, end: number, data: Buffer, first: number, last: number): Promise<void> {
    const ss = this.sectorSize;
    await this.#batches(first, last, async (bs, be) => {
      this.#checkUsable();
      const from = Math.max(bs, position);
      const to = Math.min(be, end);
      const buf = Buffer.allocUnsafe(be - bs);
      // read-modify-write of a partly covered first or last sector (read once if they are one)
      const headPartial = from > bs;
      if (headPartial) {
        const head = await this.#readSectors(bs, bs + ss);
        head.copy(buf, 0);
        head.fill(0);
      }
      if (to < be && !(headPartial && be - ss === bs)) {
        const tail = await this.#readSectors(be - ss, be);
        tail.copy(buf, be - ss - bs);
        tail.fill(0);
      }
      data.copy(buf, from - bs, from - position, to - position);
      const split = this.#split;
      const cut = split === null ? bs : Math.min(be, Math.max(bs, split.front));
      if (split !== null && cut > bs)
        await this.#encryptWrite(buf.subarray(0, cut - bs), bs, split.sourceOffset, split.sourceCipher);
      if (cut < be) await this.#encryptWrite(buf.subarray(cut - bs), cut, this.#dataOffset, this.#cipher);
      buf.fill(0);
    });
  }

  /** Encrypts plaintext sectors starting at data position `at` and writes them in one layout. */
  async #encryptWrite(plain: Buffer, at: number, dataOffset: number, cipher: SectorCipher): Promise<void> {
    const enc = await cipher.encrypt(plain, this.sectorSize, this.#tweak(at));
    this.#checkUsable();
    await this.#writeAll(enc, dataOffset + at);
  }

  /** Makes everything written so far durable: fdatasync (datasync) or fsync of the image. */
  async fsync(datasync: boolean): Promise<void> {
    this.#checkUsable();
    if (this.readOnly) return;
    await this.#drainWrites();
    this.#throwWriteError();
    await this.#track(async () => {
      try {
        if (datasync) await this.#fh.datasync();
        else await this.#fh.sync();
      } catch (err) {
        throw fromSystemError(err, this.imagePath, 'image');
      }
    });
  }

  /** Waits until every background (write-behind) write has finished, successfully or not. */
  async #drainWrites(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  /** Waits for I/O in flight, then closes the image. Idempotent. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#dropReadAhead();
    this.#closing = (async () => {
      await this.settle();
      await this.#fh.close();
    })();
    return this.#closing;
  }

  #tweak(dataOffset: number): number {
    return dataOffset / TWEAK_UNIT + this.#ivTweak;
  }

  #checkUsable(): void {
    if (this.#lockedReason !== null) {
      throw new AtrestError('LOCKED', `the volume is locked (${this.#lockedReason})`, {
        hint: 'open the volume again',
      });
    }
    if (this.#closed) throw new AtrestError('NOT_OPEN', 'the volume is closed');
  }

  async #track<T>(fn: () => Promise<T>): Promise<T> {
    this.#inFlight++;
    const t0 = process.hrtime.bigint();
    try {
      return await fn();
    } finally {
      this.#completed++;
      this.#busyNs += Number(process.hrtime.bigint() - t0);
      this.#inFlight--;
      if (this.#inFlight === 0) for (const wake of this.#drained.splice(0)) wake();
    }
  }

  /** Runs fn over [first, last) cut into sector-aligned batches, a few at once; the first error wins. */
  async #batches(first: number, last: number, fn: (bs: number, be: number) => Promise<void>): Promise<void> {
    if (last - first <= VOLUME_BATCH_BYTES) return fn(first, last);
    let next = first;
    const state: { failed: Error | null } = { failed: null };
    const worker = async (): Promise<void> => {
      while (next < last && state.failed === null) {
        const bs = next;
        const be = Math.min(last, bs + VOLUME_BATCH_BYTES);
        next = be;
        try {
          await fn(bs, be);
        } catch (err) {
          state.failed ??= err instanceof Error ? err : new AtrestError('INTERNAL', String(err));
        }
      }
    };
    await Promise.all(Array.from({ length: BATCHES_IN_FLIGHT }, worker));
    if (state.failed !== null) throw state.failed;
  }

  /** Reads and decrypts the sectors [bs, be) of the data segment (either side of a conversion front). */
  async #readSectors(bs: number, be: number): Promise<Buffer> {
    const split = this.#split;
    if (split !== null && bs < split.front) {
      if (be <= split.front) return this.#readLayout(bs, be, split.sourceOffset, split.sourceCipher);
      const [low, high] = await Promise.all([
        this.#readLayout(bs, split.front, split.sourceOffset, split.sourceCipher),
        this.#readLayout(split.front, be, this.#dataOffset, this.#cipher),
      ]);
      const out = Buffer.concat([low, high]);
      low.fill(0);
      high.fill(0);
      return out;
    }
    return this.#readLayout(bs, be, this.#dataOffset, this.#cipher);
  }

  async #readLayout(bs: number, be: number, dataOffset: number, cipher: SectorCipher): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(be - bs);
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesRead } = await this.#fh.read(buf, done, buf.length - done, dataOffset + bs + done);
        if (bytesRead === 0) {
          throw new AtrestError('TRUNCATED_IMAGE', `image ${this.imagePath} ends inside its data segment`, {
            path: this.imagePath,
          });
        }
        done += bytesRead;
      }
    } catch (err) {
      throw fromSystemError(err, this.imagePath, 'image');
    }
    return cipher.decrypt(buf, this.sectorSize, this.#tweak(bs));
  }

  async #writeAll(buf: Buffer, at: number): Promise<void> {
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesWritten } = await this.#fh.write(buf, done, buf.length - done, at + done);
        if (bytesWritten === 0) throw new AtrestError('IO', `short write to image ${this.imagePath}`);
        done += bytesWritten;
      }
    } catch (err) {
      throw fromSystemError(err, this.imagePath, 'image');
    }
  }
}
