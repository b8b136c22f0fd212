// A decrypted view of a LUKS2 data segment: owns the image fd and the shared volume state; async plaintext reads and writes over the one sync data path.
import { Buffer } from 'node:buffer';
import { open, type FileHandle } from 'node:fs/promises';
import { Keyring, type KeyRef } from '../crypto/keyring.js';
import { SECTOR_SIZES } from '../crypto/xts.js';
import { AtrestError, fromSystemError, isAtrestError } from '../errors/index.js';
import type { DiskIoDescriptor } from './disk-io.js';
import { SectorIo } from './sector-io.js';
import { SharedRangeLock } from './shared-range-lock.js';
import { I64, SharedVolumeState, STATE_CLOSED, STATE_LOCKED, type SlotRef } from './shared-volume.js';

export interface VolumeOptions {
  /** The encrypted image (or raw file for a null key). */
  imagePath: string;
  /** Byte offset of the data segment in the image. */
  dataOffset: number;
  /** Bytes of plaintext the volume exposes; whole sectors. */
  dataSize: number;
  /** Encryption sector size: 512, 1024, 2048 or 4096. */
  sectorSize: number;
  /** Added to every tweak (LUKS2 segment iv_tweak), in 512-byte units. */
  ivTweak: number;
  /**
   * The volume key: a ref into a shared keyring (PoolKey.keyRef(), or a LocalKeyring's). null is the
   * identity, for benchmarks against an unencrypted backend only: never for data.
   */
  key: KeyRef | null;
  readOnly: boolean;
  /**
   * An in-place conversion under way (see convert/converter.ts): data below `front` still lives in the source
   * layout (its own offset, key and iv_tweak: plaintext, or the old key); data at or above it is
   * converted. The converter moves the front with setConversionFront() while it holds the range
   * exclusively through lockRange().
   */
  conversion?: ConversionSplit;
}

/** Where unconverted data lives during an in-place conversion. */
export interface ConversionSplit {
  front: number;
  sourceOffset: number;
  /** The source layout's key (null: plaintext, during an encryption). Same keyring as the target key. */
  sourceKey: KeyRef | null;
  /** LUKS2 iv_tweak of the source layout (512-byte units): its sector at data offset o has tweak o/512 + this. */
  sourceIvTweak: number;
}

export interface VolumeCounters {
  bytesRead: number;
  bytesWritten: number;
  readOps: number;
  writeOps: number;
}

/** What the converter watches to yield to foreground I/O (all threads serving the volume count). */
export interface ForegroundCounters {
  /** Requests in flight now. */
  inFlight: number;
  /** Requests completed since the volume was opened. */
  completed: number;
  /** Summed latency of the completed requests, in nanoseconds. */
  busyNs: number;
}

function assertUint(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new AtrestError('USAGE', `${what} must be a non-negative integer, got ${String(n)}`);
  }
}

function slotRef(ref: KeyRef | null): SlotRef | null {
  return ref === null ? null : { slot: ref.slot, generation: ref.generation };
}

/**
 * Plaintext random access over the data segment of an encrypted image. It owns the image file, the
 * shared state (state word, in-flight count, conversion front, key refs, counters) and the shared
 * range-lock table; descriptor() hands all of it to serving threads (openDiskIo), which run the same
 * synchronous data path (SectorIo) as this class does on the main thread after taking its range
 * locks asynchronously. Any offset and length: partial sectors are read-modify-written under an
 * exclusive range lock; reads take the range shared. A write resolves once its pwrite is done.
 */
export class Volume {
  readonly size: number;
  readonly readOnly: boolean;
  readonly sectorSize: number;
  readonly imagePath: string;
  readonly #fh: FileHandle;
  readonly #desc: DiskIoDescriptor;
  readonly #core: SectorIo;
  readonly #state: SharedVolumeState;
  readonly #locks: SharedRangeLock;
  #lockedReason: string | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;

  private constructor(opts: VolumeOptions, fh: FileHandle, keyring: SharedArrayBuffer) {
    this.imagePath = opts.imagePath;
    this.size = opts.dataSize;
    this.readOnly = opts.readOnly;
    this.sectorSize = opts.sectorSize;
    this.#fh = fh;
    const state = new SharedVolumeState();
    state.setTarget(slotRef(opts.key));
    const c = opts.conversion;
    state.setSourceLayout(c?.sourceOffset ?? 0, c?.sourceIvTweak ?? 0, slotRef(c?.sourceKey ?? null));
    state.front = c?.front ?? 0;
    this.#desc = {
      fd: fh.fd,
      imagePath: opts.imagePath,
      size: opts.dataSize,
      readOnly: opts.readOnly,
      sectorSize: opts.sectorSize,
      dataOffset: opts.dataOffset,
      ivTweak: opts.ivTweak,
      state: state.buffer,
      locks: new SharedRangeLock().buffer,
      keyring,
    };
    this.#core = new SectorIo(this.#desc);
    this.#state = this.#core.state;
    this.#locks = this.#core.locks;
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
    if (opts.conversion) {
      assertUint(opts.conversion.front, 'conversion front');
      assertUint(opts.conversion.sourceOffset, 'source offset');
      assertUint(opts.conversion.sourceIvTweak, 'source iv tweak');
    }
    if (opts.dataSize % opts.sectorSize !== 0) {
      throw new AtrestError(
        'UNSUPPORTED',
        `data size ${opts.dataSize} is not whole ${opts.sectorSize}-byte sectors`,
        { path: opts.imagePath },
      );
    }
    const keyring = sharedKeyring([opts.key, opts.conversion?.sourceKey ?? null], null);
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
    return new Volume(opts, fh, keyring);
  }

  /**
   * Everything a serving thread needs (openDiskIo): the image fd, the geometry and the shared buffers.
   * The fd stays valid until close(); close the serving threads' side first.
   */
  descriptor(): DiskIoDescriptor {
    return this.#desc;
  }

  /** Whether any read, write or flush is in flight in any thread. */
  get busy(): boolean {
    return this.#state.inFlight > 0;
  }

  /** Foreground load for the converter's adaptive yielding (requests of every serving thread). */
  foreground(): { inFlight: number; completed: number; busyNs: number } {
    return {
      inFlight: this.#state.inFlight,
      completed: this.#state.counter(I64.COMPLETED),
      busyNs: this.#state.counter(I64.BUSY_NS),
    };
  }

  /** The conversion front (bytes), or null when no conversion is under way. */
  get conversionFront(): number | null {
    const f = this.#state.front;
    return f === 0 ? null : f;
  }

  /**
   * Moves the conversion front (the caller holds [front, old front) exclusively through lockRange,
   * and the data there is durable in the target layout); 0 ends the conversion.
   */
  setConversionFront(front: number): void {
    assertUint(front, 'conversion front');
    if (this.#state.front === 0 && front !== 0) throw new AtrestError('INTERNAL', 'no conversion under way');
    this.#state.front = front;
  }

  /**
   * Starts an in-place conversion of an open volume (reencrypt): waits for every read and write in
   * flight in any thread (the whole range taken exclusively), then serves [0, split.front) through the
   * source layout and the rest with `target` (a ref into the same keyring as the volume's key).
   */
  async beginConversion(target: KeyRef | null, split: ConversionSplit): Promise<void> {
    this.#checkUsable();
    assertUint(split.front, 'conversion front');
    assertUint(split.sourceOffset, 'source offset');
    assertUint(split.sourceIvTweak, 'source iv tweak');
    sharedKeyring([target, split.sourceKey], this.#desc.keyring);
    const release = this.size > 0 ? await this.lockRange(0, this.size) : (): void => undefined;
    try {
      this.#checkUsable();
      this.#state.setTarget(slotRef(target));
      this.#state.setSourceLayout(split.sourceOffset, split.sourceIvTweak, slotRef(split.sourceKey));
      this.#state.front = split.front;
    } finally {
      release();
    }
  }

  /** Takes [first, last) (sector aligned) exclusively: reads and writes there, in every thread, wait until release. */
  async lockRange(first: number, last: number): Promise<() => void> {
    const h = await this.#locks.acquireAsync(first, last, true);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#locks.release(h);
    };
  }

  /** A snapshot of the I/O counters (every thread). */
  get counters(): VolumeCounters {
    return {
      bytesRead: this.#state.counter(I64.BYTES_READ),
      bytesWritten: this.#state.counter(I64.BYTES_WRITTEN),
      readOps: this.#state.counter(I64.READ_OPS),
      writeOps: this.#state.counter(I64.WRITE_OPS),
    };
  }

  /** Why the volume was locked, or null. */
  get lockedReason(): string | null {
    return this.#lockedReason;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Stops all I/O for good (the key is about to be revoked): the shared state word turns locked, so
   * every later request in every thread, and every write not yet issued to the image, fails with
   * LOCKED. This thread's key schedules are wiped; serving threads drop theirs on refresh().
   */
  lock(reason: string): void {
    if (this.#lockedReason === null) this.#lockedReason = reason || 'locked';
    this.#state.setState(STATE_LOCKED);
    this.#core.wipeKeys();
  }

  /** Resolves once no request is in flight in any thread (after lock(), nothing reaches the image then). */
  settle(): Promise<void> {
    return this.#state.settled();
  }

  /** Reads up to `length` bytes at `position`; fewer at the end of the volume, none past it. */
  async read(position: number, length: number): Promise<Buffer> {
    this.#checkUsable();
    const count = this.#core.readLength(position, length, Number.MAX_SAFE_INTEGER);
    if (count === 0) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(count);
    await this.#request(position, position + count, false, () =>
      this.#core.readLocked(position, position + count, out),
    );
    return out;
  }

  /**
   * Writes `data` at `position`. Returns the bytes written: all of them, or fewer when the volume
   * ends first; they have reached the image file when it resolves (durable after fsync). Fails with
   * NO_SPACE when `position` is at or past the end and data is not empty.
   */
  async write(position: number, data: Buffer): Promise<number> {
    this.#checkUsable();
    const n = this.#core.writeLength(position, data);
    if (n === 0) return 0;
    await this.#request(position, position + n, true, () =>
      this.#core.writeLocked(position, position + n, data),
    );
    return n;
  }

  /** Makes everything written so far durable: fdatasync (datasync) or fsync of the image. */
  async fsync(datasync: boolean): Promise<void> {
    this.#checkUsable();
    if (this.readOnly) return;
    const t = this.#enter();
    try {
      if (datasync) await this.#fh.datasync();
      else await this.#fh.sync();
    } catch (err) {
      throw this.#explain(fromSystemError(err, this.imagePath, 'image'));
    } finally {
      this.#core.leave(t);
    }
  }

  /**
   * Closes the volume: the state word turns closed (every thread's next request fails), waits for
   * what is in flight, wipes this thread's keys and closes the image. Serving threads must have
   * stopped using the descriptor before (close the FUSE side first). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#state.setState(STATE_CLOSED);
      await this.settle();
      this.#core.close();
      await this.#fh.close();
    })();
    return this.#closing;
  }

  async #request(position: number, end: number, exclusive: boolean, fn: () => void): Promise<void> {
    const t = this.#enter();
    try {
      const [first, last] = this.#core.sectorSpan(position, end);
      const h = await this.#locks.acquireAsync(first, last, exclusive);
      try {
        fn();
      } finally {
        this.#locks.release(h);
      }
    } catch (err) {
      throw this.#explain(err);
    } finally {
      this.#core.leave(t);
    }
  }

  #enter(): bigint {
    try {
      return this.#core.enter();
    } catch (err) {
      throw this.#explain(err);
    }
  }

  /** LOCKED from the data path, with this volume's reason (or NOT_OPEN once it was closed). */
  #explain(err: unknown): unknown {
    if (!isAtrestError(err) || err.code !== 'LOCKED') return err;
    if (this.#lockedReason !== null) {
      return new AtrestError('LOCKED', `the volume is locked (${this.#lockedReason})`, {
        hint: 'open the volume again',
      });
    }
    if (this.#closed) return new AtrestError('NOT_OPEN', 'the volume is closed');
    return err;
  }

  #checkUsable(): void {
    if (this.#lockedReason !== null) throw this.#explain(new AtrestError('LOCKED', 'locked'));
    if (this.#closed) throw new AtrestError('NOT_OPEN', 'the volume is closed');
  }
}

/**
 * The keyring every key ref of a volume lives in: refs must share one (`expected` when given); with
 * no key at all (identity), an empty keyring of the volume's own.
 */
function sharedKeyring(refs: Array<KeyRef | null>, expected: SharedArrayBuffer | null): SharedArrayBuffer {
  let buf = expected;
  for (const r of refs) {
    if (r === null) continue;
    if (buf !== null && r.keyring !== buf) {
      throw new AtrestError('INTERNAL', 'the keys of one volume must live in one keyring');
    }
    buf = r.keyring;
  }
  return buf ?? new Keyring().buffer;
}
