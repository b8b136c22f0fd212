// The shared control block of one kernel-backend session: words the main thread and every worker read and write with Atomics.
import { OP_SLOTS } from './abi.js';

/** Word indexes in the session's Int32Array control block. */
export const Ctl = {
  /** 1: the session is closing; workers exit when their read fails or returns. */
  STOP: 0,
  /** Negotiated minor (0 until INIT was answered). */
  MINOR: 1,
  /** 0 waiting for INIT, 1 INIT answered, 2 INIT refused (kernel too old). */
  INIT_STATE: 2,
  KERNEL_MINOR: 3,
  /** INIT flags this server replied with. */
  INIT_FLAGS: 4,
  /** INIT flags (and flags2) the kernel offered. */
  KERNEL_FLAGS: 5,
  KERNEL_FLAGS2: 6,
  /** Bumped by dropKeys(); every worker stores the value it has refreshed against in its ack word. */
  DROP_GEN: 7,
  /** Requests being served now. */
  IN_FLIGHT: 8,
  /** 1 when a WRITE reached the image since the last sync (FLUSH syncs only then). */
  DIRTY: 9,
  /** INTERRUPT requests seen. */
  INTERRUPTS: 10,
  /** Largest READ / WRITE payload requested so far. */
  MAX_READ: 11,
  MAX_WRITE: 12,
  /** fdatasync/fsync calls made for FLUSH/FSYNC. */
  SYNCS: 13,
  NEXT_FH: 14,
  /** DESTROY received. */
  DESTROYED: 15,
  /** Requests that failed to decode. */
  PROTOCOL_ERRORS: 16,
  /** Most requests ever served at once (async direct I/O spreads them over the workers). */
  MAX_IN_FLIGHT: 17,
  /** Per-opcode request counts start here (OP_SLOTS words). */
  OPS: 32,
} as const;

export const MAX_WORKERS = 64;
const ACKS = Ctl.OPS + OP_SLOTS;
/** A worker's ack word when it has exited (its keys are gone with it). */
export const ACK_GONE = -1;
export const CONTROL_WORDS = ACKS + MAX_WORKERS;

export function newControl(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
}

/** Index of worker `i`'s ack word. */
export function ackIndex(i: number): number {
  return ACKS + i;
}

/** Raises word `index` to at least `value`. */
export function atomicMax(ctl: Int32Array, index: number, value: number): void {
  for (;;) {
    const cur = Atomics.load(ctl, index);
    if (cur >= value || Atomics.compareExchange(ctl, index, cur, value) === cur) return;
  }
}
