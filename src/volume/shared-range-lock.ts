// A fair range lock over [start, end) in shared memory: every serving thread and the converter take the same table (sync in workers, async on the main thread).

import { waitAsync } from './shared-volume.js';

/**
 * Layout of the lock buffer:
 *   Int32 [0] mutex (0 free, 1 held, 2 held with waiters): held only while the table is edited
 *   Int32 [1] change counter: bumped (and notified) on every release; waiters wait on it
 *   Int32 [2] high-water mark: entries at or above it have never been used
 *   Float64 [2] next arrival ticket (byte 16)
 *   then ENTRIES entries of 5 Float64: status (0 free, 1 waiting, 2 held), exclusive (0/1),
 *   ticket, start, end. Entries are only read and written with the mutex held.
 */
export const LOCK_ENTRIES = 256;
const ENTRY = 5;
const HEADER_F64 = 4;
export const LOCK_BYTES = (HEADER_F64 + LOCK_ENTRIES * ENTRY) * 8;

const MUTEX = 0;
const CHANGE = 1;
const HIGH = 2;
const NEXT_TICKET = 2; // Float64 index

const FREE = 0;
const WAITING = 1;
const HELD = 2;

/** Re-check this often even without a notify (a safety net, not the wake-up path). */
const WAIT_SLICE_MS = 200;
const SPINS = 64;

/** A held range; give it back with release(). */
export type LockHandle = number;

interface Step {
  entry: number;
  granted: boolean;
  seen: number;
}

/**
 * Range locks shared by threads: two requests conflict when their ranges overlap and at least one is
 * exclusive. Fair: a request is granted only when it conflicts with no held range and with no waiting
 * request that arrived (took its ticket) before it, so readers cannot starve a writer nor writers a
 * reader. When the table is full, a request waits for a free entry. Each holder holds one range at a
 * time and holders never wait for one another's later requests, so there is no deadlock.
 */
export class SharedRangeLock {
  readonly buffer: SharedArrayBuffer;
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(LOCK_BYTES)) {
    if (buffer.byteLength !== LOCK_BYTES) throw new RangeError('range lock buffer has the wrong size');
    this.buffer = buffer;
    this.#i32 = new Int32Array(buffer, 0, 4);
    this.#f64 = new Float64Array(buffer);
  }

  /** Takes [start, end), blocking this thread (Atomics.wait): for worker threads only. */
  acquireSync(start: number, end: number, exclusive: boolean): LockHandle {
    checkRange(start, end);
    let entry = -1;
    for (;;) {
      const s = this.#step(entry, start, end, exclusive);
      if (s.granted) return s.entry;
      entry = s.entry;
      Atomics.wait(this.#i32, CHANGE, s.seen, WAIT_SLICE_MS);
    }
  }

  /** Takes [start, end) without blocking the event loop (Atomics.waitAsync): for the main thread. */
  async acquireAsync(start: number, end: number, exclusive: boolean): Promise<LockHandle> {
    checkRange(start, end);
    let entry = -1;
    for (;;) {
      const s = this.#step(entry, start, end, exclusive);
      if (s.granted) return s.entry;
      entry = s.entry;
      const w = waitAsync(this.#i32, CHANGE, s.seen, WAIT_SLICE_MS);
      if (w.async) await w.value;
    }
  }

  /** Gives a held range back and wakes every waiter to re-check. */
  release(handle: LockHandle): void {
    this.#lock();
    try {
      const base = HEADER_F64 + handle * ENTRY;
      if (this.#f64[base] !== HELD) throw new RangeError(`range lock entry ${handle} is not held`);
      this.#f64[base] = FREE;
      Atomics.add(this.#i32, CHANGE, 1);
    } finally {
      this.#unlock();
    }
    Atomics.notify(this.#i32, CHANGE);
  }

  /** Entries held and waiting now (tests, status). */
  stats(): { held: number; waiting: number } {
    let held = 0;
    let waiting = 0;
    this.#lock();
    try {
      const high = Atomics.load(this.#i32, HIGH);
      for (let i = 0; i < high; i++) {
        const st = this.#f64[HEADER_F64 + i * ENTRY];
        if (st === HELD) held++;
        else if (st === WAITING) waiting++;
      }
    } finally {
      this.#unlock();
    }
    return { held, waiting };
  }

  /** One attempt, under the mutex: take an entry (if none yet) and grant it when nothing blocks it. */
  #step(entry: number, start: number, end: number, exclusive: boolean): Step {
    const f = this.#f64;
    this.#lock();
    try {
      if (entry < 0) {
        const high = Atomics.load(this.#i32, HIGH);
        for (let i = 0; i < LOCK_ENTRIES; i++) {
          if (i >= high || f[HEADER_F64 + i * ENTRY] === FREE) {
            entry = i;
            break;
          }
        }
        if (entry < 0) return { entry: -1, granted: false, seen: Atomics.load(this.#i32, CHANGE) };
        if (entry >= high) Atomics.store(this.#i32, HIGH, entry + 1);
        const base = HEADER_F64 + entry * ENTRY;
        const ticket = f[NEXT_TICKET] ?? 0;
        f[NEXT_TICKET] = ticket + 1;
        f[base] = WAITING;
        f[base + 1] = exclusive ? 1 : 0;
        f[base + 2] = ticket;
        f[base + 3] = start;
        f[base + 4] = end;
      }
      if (this.#grantable(entry)) {
        f[HEADER_F64 + entry * ENTRY] = HELD;
        return { entry, granted: true, seen: 0 };
      }
      return { entry, granted: false, seen: Atomics.load(this.#i32, CHANGE) };
    } finally {
      this.#unlock();
    }
  }

  #grantable(entry: number): boolean {
    const f = this.#f64;
    const base = HEADER_F64 + entry * ENTRY;
    const excl = f[base + 1] === 1;
    const ticket = f[base + 2] ?? 0;
    const start = f[base + 3] ?? 0;
    const end = f[base + 4] ?? 0;
    const high = Atomics.load(this.#i32, HIGH);
    for (let i = 0; i < high; i++) {
      if (i === entry) continue;
      const o = HEADER_F64 + i * ENTRY;
      const st = f[o];
      if (st === FREE) continue;
      if (!(excl || f[o + 1] === 1)) continue;
      if (!((f[o + 3] ?? 0) < end && start < (f[o + 4] ?? 0))) continue;
      if (st === HELD || (f[o + 2] ?? 0) < ticket) return false;
    }
    return true;
  }

  #lock(): void {
    const a = this.#i32;
    let c = Atomics.compareExchange(a, MUTEX, 0, 1);
    if (c === 0) return;
    for (let i = 0; i < SPINS; i++) {
      c = Atomics.compareExchange(a, MUTEX, 0, 1);
      if (c === 0) return;
    }
    // held only for a table edit: a short block (even on the main thread) is fine
    do {
      if (c === 2 || Atomics.compareExchange(a, MUTEX, 1, 2) !== 0) Atomics.wait(a, MUTEX, 2, 10);
    } while ((c = Atomics.compareExchange(a, MUTEX, 0, 2)) !== 0);
  }

  #unlock(): void {
    if (Atomics.sub(this.#i32, MUTEX, 1) !== 1) {
      Atomics.store(this.#i32, MUTEX, 0);
      Atomics.notify(this.#i32, MUTEX, 1);
    }
  }
}

function checkRange(start: number, end: number): void {
  if (!(end > start) || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0) {
    throw new RangeError(`empty or inverted range [${start}, ${end})`);
  }
}
