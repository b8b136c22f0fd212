// The shared state of one open volume (descriptor.state): state word, in-flight count, conversion front and source layout, key refs, counters.

/** descriptor.state: Int32 words first, then BigInt64 words from byte STATE_I64_OFFSET. */
export const STATE_BYTES = 256;
const STATE_I64_OFFSET = 64;

/** Int32 word indices. */
export const I32 = {
  /** 0 open, 1 locked, 2 closed: checked at the start of every request and before every pwrite. */
  STATE: 0,
  /** Requests (read, write, sync) in flight in any thread; Atomics.notify when it drops to 0. */
  IN_FLIGHT: 1,
  /** The key the target layout (at and above the front) is encrypted with: slot or -1 (identity). */
  TARGET_SLOT: 2,
  TARGET_GEN: 3,
  /** The key of the source layout (below the front): slot or -1 (identity: plaintext source). */
  SOURCE_SLOT: 4,
  SOURCE_GEN: 5,
} as const;

/** BigInt64 word indices (from byte STATE_I64_OFFSET). */
export const I64 = {
  /** Conversion front in bytes: data below it still lives in the source layout; 0 = no conversion. */
  FRONT: 0,
  /** Byte offset of the source layout's data in the image. */
  SOURCE_OFFSET: 1,
  /** LUKS2 iv_tweak of the source layout (512-byte units): its sector at o has tweak o/512 + this. */
  SOURCE_IV_TWEAK: 2,
  /** Requests completed (foreground counters for the converter's yielding). */
  COMPLETED: 3,
  /** Summed latency of completed requests, ns. */
  BUSY_NS: 4,
  BYTES_READ: 5,
  BYTES_WRITTEN: 6,
  READ_OPS: 7,
  WRITE_OPS: 8,
} as const;

type WaitAsync = (
  a: Int32Array,
  index: number,
  value: number,
  timeout?: number,
) => { async: false; value: string } | { async: true; value: Promise<string> };
/** Atomics.waitAsync (Node 20; not in the ES2023 lib typings). */
export const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

export const STATE_OPEN = 0;
export const STATE_LOCKED = 1;
export const STATE_CLOSED = 2;

/** A key ref as the state words hold it: slot -1 means identity (no encryption). */
export interface SlotRef {
  slot: number;
  generation: number;
}

/** Typed views of a volume's state buffer; cheap to make in every thread. */
export class SharedVolumeState {
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;

  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(STATE_BYTES)) {
    if (buffer.byteLength !== STATE_BYTES) throw new RangeError('volume state buffer has the wrong size');
    this.i32 = new Int32Array(buffer, 0, STATE_I64_OFFSET / 4);
    this.i64 = new BigInt64Array(buffer, STATE_I64_OFFSET, (STATE_BYTES - STATE_I64_OFFSET) / 8);
  }

  get state(): number {
    return Atomics.load(this.i32, I32.STATE);
  }

  /** Moves open -> locked or open/locked -> closed (never back). */
  setState(s: typeof STATE_LOCKED | typeof STATE_CLOSED): void {
    for (;;) {
      const cur = Atomics.load(this.i32, I32.STATE);
      if (cur >= s) return;
      if (Atomics.compareExchange(this.i32, I32.STATE, cur, s) === cur) return;
    }
  }

  get inFlight(): number {
    return Atomics.load(this.i32, I32.IN_FLIGHT);
  }

  /** Resolves once no request is in flight in any thread (Atomics.waitAsync: never blocks). */
  async settled(): Promise<void> {
    for (;;) {
      const n = Atomics.load(this.i32, I32.IN_FLIGHT);
      if (n === 0) return;
      const w = waitAsync(this.i32, I32.IN_FLIGHT, n, 200);
      if (w.async) await w.value;
    }
  }

  /** Counts a request in; returns the state seen after counting (the request must not run unless open). */
  enter(): number {
    Atomics.add(this.i32, I32.IN_FLIGHT, 1);
    return Atomics.load(this.i32, I32.STATE);
  }

  /** Counts a request out (started at `startNs`, process.hrtime.bigint()); wakes settle() at 0. */
  leave(startNs: bigint | null): void {
    if (startNs !== null) {
      Atomics.add(this.i64, I64.COMPLETED, 1n);
      Atomics.add(this.i64, I64.BUSY_NS, process.hrtime.bigint() - startNs);
    }
    if (Atomics.sub(this.i32, I32.IN_FLIGHT, 1) === 1) Atomics.notify(this.i32, I32.IN_FLIGHT);
  }

  get front(): number {
    return Number(Atomics.load(this.i64, I64.FRONT));
  }

  set front(v: number) {
    Atomics.store(this.i64, I64.FRONT, BigInt(v));
  }

  get sourceOffset(): number {
    return Number(Atomics.load(this.i64, I64.SOURCE_OFFSET));
  }

  get sourceIvTweak(): number {
    return Number(Atomics.load(this.i64, I64.SOURCE_IV_TWEAK));
  }

  setSourceLayout(offset: number, ivTweak: number, key: SlotRef | null): void {
    Atomics.store(this.i64, I64.SOURCE_OFFSET, BigInt(offset));
    Atomics.store(this.i64, I64.SOURCE_IV_TWEAK, BigInt(ivTweak));
    this.#setRef(I32.SOURCE_SLOT, I32.SOURCE_GEN, key);
  }

  setTarget(key: SlotRef | null): void {
    this.#setRef(I32.TARGET_SLOT, I32.TARGET_GEN, key);
  }

  target(): SlotRef | null {
    return this.#ref(I32.TARGET_SLOT, I32.TARGET_GEN);
  }

  source(): SlotRef | null {
    return this.#ref(I32.SOURCE_SLOT, I32.SOURCE_GEN);
  }

  count(index: number, by: number): void {
    Atomics.add(this.i64, index, BigInt(by));
  }

  counter(index: number): number {
    return Number(Atomics.load(this.i64, index));
  }

  #setRef(slotIdx: number, genIdx: number, key: SlotRef | null): void {
    Atomics.store(this.i32, genIdx, key === null ? 0 : key.generation);
    Atomics.store(this.i32, slotIdx, key === null ? -1 : key.slot);
  }

  #ref(slotIdx: number, genIdx: number): SlotRef | null {
    const slot = Atomics.load(this.i32, slotIdx);
    return slot < 0 ? null : { slot, generation: Atomics.load(this.i32, genIdx) };
  }
}
