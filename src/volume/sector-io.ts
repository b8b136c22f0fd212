// The synchronous data path every serving thread runs: pread/pwrite of the image, XTS per request, partial-sector read-modify-write, the conversion split.
import { Buffer } from 'node:buffer';
import { fdatasyncSync, fsyncSync, readSync } from 'node:fs';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { KeyCache } from '../crypto/key-cache.js';
import type { XtsCipher } from '../crypto/xts.js';
import { DataLayout } from './data-layout.js';
import type { DiskIo, DiskIoDescriptor } from './disk-io.js';
import { SharedRangeLock } from './shared-range-lock.js';
import { I64, SharedVolumeState, STATE_CLOSED, STATE_OPEN, type SlotRef } from './shared-volume.js';
import { writeImageSync } from './image-write.js';

/** Writes are encrypted in a reusable scratch buffer, at most this much at a time (a FUSE request's max). */
const WRITE_CHUNK = 1024 * 1024;

export function lockedError(state: number): AtrestError {
  return state === STATE_CLOSED
    ? new AtrestError('LOCKED', 'the volume is closed', { hint: 'open the volume again' })
    : new AtrestError('LOCKED', 'the volume is locked', { hint: 'open the volume again' });
}

function assertUint(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new AtrestError('USAGE', `${what} must be a non-negative integer, got ${String(n)}`);
  }
}

/**
 * One thread's synchronous handle on a volume (DiskIo). Workers use readInto/write/sync, which take
 * range locks with Atomics.wait; the main-thread Volume takes its locks asynchronously and calls the
 * *Locked methods between enter() and leave().
 */
export class SectorIo implements DiskIo {
  readonly size: number;
  readonly readOnly: boolean;
  readonly sectorSize: number;
  readonly imagePath: string;
  readonly state: SharedVolumeState;
  readonly locks: SharedRangeLock;
  readonly #fd: number;
  /** The volume's own layout (at and above a conversion front). */
  readonly #target: DataLayout;
  /** The source layout below a conversion front, reloaded from the shared state per request. */
  readonly #source: DataLayout;
  readonly #keys: KeyCache;
  #scratch: Buffer | null = null;
  #closed = false;

  constructor(d: DiskIoDescriptor) {
    this.size = d.size;
    this.readOnly = d.readOnly;
    this.sectorSize = d.sectorSize;
    this.imagePath = d.imagePath;
    this.#fd = d.fd;
    this.#target = new DataLayout(d.dataOffset, d.sectorSize, d.ivTweak);
    this.#source = new DataLayout(0, d.sectorSize, 0);
    this.state = new SharedVolumeState(d.state);
    this.locks = new SharedRangeLock(d.locks);
    this.#keys = new KeyCache(d.keyring);
  }

  // ---- DiskIo: for threads that may block ------------------------------------------------------

  readInto(position: number, length: number, out: Buffer): number {
    if (this.#closed) throw lockedError(STATE_CLOSED);
    const n = this.readLength(position, length, out.length);
    if (n === 0) return 0;
    const t = this.enter();
    try {
      const [first, last] = this.sectorSpan(position, position + n);
      const h = this.locks.acquireSync(first, last, false);
      try {
        this.readLocked(position, position + n, out);
      } finally {
        this.locks.release(h);
      }
    } finally {
      this.leave(t);
    }
    return n;
  }

  write(position: number, data: Buffer): number {
    const n = this.writeLength(position, data);
    if (n === 0) return 0;
    const t = this.enter();
    try {
      const [first, last] = this.sectorSpan(position, position + n);
      const h = this.locks.acquireSync(first, last, true);
      try {
        this.writeLocked(position, position + n, data);
      } finally {
        this.locks.release(h);
      }
    } finally {
      this.leave(t);
    }
    return n;
  }

  sync(datasync: boolean): void {
    const t = this.enter();
    try {
      if (this.readOnly) return;
      try {
        if (datasync) fdatasyncSync(this.#fd);
        else fsyncSync(this.#fd);
      } catch (err) {
        throw fromSystemError(err, this.imagePath, 'image');
      }
    } finally {
      this.leave(t);
    }
  }

  refresh(): boolean {
    return this.#keys.refresh() > 0;
  }

  close(): void {
    this.#closed = true;
    this.wipeKeys();
  }

  // ---- building blocks (the main-thread Volume uses these around its async range locks) ----------

  /** Drops this thread's key schedules (they are rebuilt from the keyring on the next request). */
  wipeKeys(): void {
    this.#keys.wipeAll();
    this.#scratch?.fill(0);
    this.#scratch = null;
  }

  /** Validates a read; returns the bytes it covers (0 at or past the end). */
  readLength(position: number, length: number, room: number): number {
    assertUint(position, 'read position');
    assertUint(length, 'read length');
    const n = Math.max(0, Math.min(this.size, position + length) - position);
    if (room < n) throw new AtrestError('INTERNAL', `read buffer of ${room} bytes is too small`);
    return n;
  }

  /** Validates a write; returns the bytes it covers (fewer when the volume ends first). */
  writeLength(position: number, data: Buffer): number {
    assertUint(position, 'write position');
    if (this.#closed) throw lockedError(STATE_CLOSED);
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
    return Math.min(this.size, position + data.length) - position;
  }

  /** The whole sectors [first, last) that hold [position, end). */
  sectorSpan(position: number, end: number): [number, number] {
    const ss = this.sectorSize;
    return [position - (position % ss), Math.ceil(end / ss) * ss];
  }

  /** Counts a request in (throws LOCKED unless the volume is open); returns its start time for leave(). */
  enter(): bigint {
    if (this.#closed) throw lockedError(STATE_CLOSED);
    const s = this.state.enter();
    if (s !== STATE_OPEN) {
      this.state.leave(null);
      throw lockedError(s);
    }
    return process.hrtime.bigint();
  }

  leave(start: bigint): void {
    this.state.leave(start);
  }

  /** Reads and decrypts [position, end) into out[0..] with the range held (shared or exclusive). */
  readLocked(position: number, end: number, out: Buffer): void {
    this.#checkState();
    const ss = this.sectorSize;
    let pos = position;
    if (pos % ss !== 0) {
      const s = pos - (pos % ss);
      const sector = this.#scratchOf(ss);
      try {
        this.#readSectors(s, s + ss, sector);
        const to = Math.min(end, s + ss);
        sector.copy(out, 0, pos - s, to - s);
        pos = to;
      } finally {
        sector.fill(0);
      }
    }
    const mid = end - (end % ss);
    if (mid > pos) {
      this.#readSectors(pos, mid, out.subarray(pos - position, mid - position));
      pos = mid;
    }
    if (pos < end) {
      const sector = this.#scratchOf(ss);
      try {
        this.#readSectors(pos, pos + ss, sector);
        sector.copy(out, pos - position, 0, end - pos);
      } finally {
        sector.fill(0);
      }
    }
    this.state.count(I64.BYTES_READ, end - position);
    this.state.count(I64.READ_OPS, 1);
  }

  /** Encrypts and writes data[0 .. end-position) at position, with the covering sectors held exclusively. */
  writeLocked(position: number, end: number, data: Buffer): void {
    this.#checkState();
    const ss = this.sectorSize;
    const [first, last] = this.sectorSpan(position, end);
    for (let cs = first; cs < last;) {
      const ce = Math.min(last, cs + WRITE_CHUNK);
      const buf = this.#scratchOf(ce - cs);
      try {
        const from = Math.max(cs, position);
        const to = Math.min(ce, end);
        // read-modify-write of a partly covered first or last sector (read once if they are one)
        const headPartial = from > cs;
        if (headPartial) this.#readSectors(cs, cs + ss, buf.subarray(0, ss));
        if (to < ce && !(headPartial && ce - ss === cs))
          this.#readSectors(ce - ss, ce, buf.subarray(ce - ss - cs));
        data.copy(buf, from - cs, from - position, to - position);
        const front = this.state.front;
        const cut = Math.min(ce, Math.max(cs, front));
        if (cut > cs) {
          this.#writeLayout(buf.subarray(0, cut - cs), cs, this.#sourceLayout(), this.state.source());
        }
        if (cut < ce) {
          this.#writeLayout(buf.subarray(cut - cs), cut, this.#target, this.state.target());
        }
      } finally {
        buf.fill(0);
      }
      cs = ce;
    }
    this.state.count(I64.BYTES_WRITTEN, end - position);
    this.state.count(I64.WRITE_OPS, 1);
  }

  // ---- internals -------------------------------------------------------------------------------

  #checkState(): void {
    if (this.#closed) throw lockedError(STATE_CLOSED);
    const s = this.state.state;
    if (s !== STATE_OPEN) throw lockedError(s);
  }

  /** A scratch buffer of n bytes (n <= WRITE_CHUNK), reused across requests; callers zero what they used. */
  #scratchOf(n: number): Buffer {
    this.#scratch ??= Buffer.alloc(WRITE_CHUNK);
    return this.#scratch.subarray(0, n);
  }

  /** The key schedule of a layout; null for identity; throws LOCKED once the key was wiped. */
  #cipher(ref: SlotRef | null): XtsCipher | null {
    if (ref === null) return null;
    const c = this.#keys.cipherFor(ref.slot, ref.generation);
    if (c === null)
      throw new AtrestError('LOCKED', 'the volume key has been wiped', { hint: 'open the volume again' });
    return c;
  }

  /** Reads and decrypts the sectors [bs, be) of the data (either side of a conversion front) into dst. */
  #readSectors(bs: number, be: number, dst: Buffer): void {
    const st = this.state;
    const front = st.front;
    const cut = Math.min(be, Math.max(bs, front));
    if (cut > bs) this.#readLayout(bs, dst.subarray(0, cut - bs), this.#sourceLayout(), st.source());
    if (cut < be) this.#readLayout(cut, dst.subarray(cut - bs), this.#target, st.target());
  }

  /** The source layout as the shared state has it now (no allocation: one reused DataLayout). */
  #sourceLayout(): DataLayout {
    const l = this.#source;
    l.offset = this.state.sourceOffset;
    l.ivTweak = this.state.sourceIvTweak;
    return l;
  }

  #readLayout(at: number, dst: Buffer, layout: DataLayout, ref: SlotRef | null): void {
    const cipher = this.#cipher(ref);
    let done = 0;
    try {
      while (done < dst.length) {
        const n = readSync(this.#fd, dst, done, dst.length - done, layout.imageOffset(at) + done);
        if (n === 0) {
          throw new AtrestError('TRUNCATED_IMAGE', `image ${this.imagePath} ends inside its data segment`, {
            path: this.imagePath,
            hint: 'the image was truncated; restore it from a backup',
          });
        }
        done += n;
      }
    } catch (err) {
      throw fromSystemError(err, this.imagePath, 'image');
    }
    cipher?.decryptInPlace(dst, layout.sectorSize, layout.firstTweak(at));
  }

  #writeLayout(plain: Buffer, at: number, layout: DataLayout, ref: SlotRef | null): void {
    const cipher = this.#cipher(ref);
    cipher?.encryptInPlace(plain, layout.sectorSize, layout.firstTweak(at));
    // locked or closed meanwhile: nothing more reaches the image
    this.#checkState();
    try {
      writeImageSync(this.#fd, plain, layout.imageOffset(at), this.imagePath);
    } catch (err) {
      throw fromSystemError(err, this.imagePath, 'image');
    }
  }
}
