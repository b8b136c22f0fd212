// The synchronous per-request data path a serving thread calls: one read-decrypt / encrypt-write path over shared volume state.
import type { Buffer } from 'node:buffer';

/**
 * Everything a thread needs to serve a volume's plaintext: plain numbers plus SharedArrayBuffers,
 * so it travels to worker threads (workerData / postMessage) by reference, not by copy.
 */
export interface DiskIoDescriptor {
  /** The image file descriptor (process-wide; valid until the owning Volume is closed). */
  readonly fd: number;
  readonly imagePath: string;
  /** Plaintext bytes the volume exposes (whole sectors). */
  readonly size: number;
  readonly readOnly: boolean;
  /** 512, 1024, 2048 or 4096. */
  readonly sectorSize: number;
  /** Byte offset of the (target layout's) data segment in the image. */
  readonly dataOffset: number;
  /** LUKS2 iv_tweak of the target layout, in 512-byte units. */
  readonly ivTweak: number;
  /** State word, in-flight count, conversion front and source layout, key references, counters. */
  readonly state: SharedArrayBuffer;
  /** The sector range lock table all serving threads and the converter share. */
  readonly locks: SharedArrayBuffer;
  /** The crypto pool's keyring: keys are referenced by slot + generation held in `state`. */
  readonly keyring: SharedArrayBuffer;
}

/**
 * One thread's handle on a volume. Every method is synchronous (pread/pwrite, XTS in this thread,
 * Atomics.wait on range locks): only for threads that serve requests and may block, never for the
 * main thread. Failures throw AtrestError (LOCKED after lock/close, IO, NO_SPACE, READ_ONLY...).
 */
export interface DiskIo {
  readonly size: number;
  readonly readOnly: boolean;
  readonly sectorSize: number;
  /** Reads up to `length` bytes at `position` into out[0..]: fewer at the end, none past it; returns the count. */
  readInto(position: number, length: number, out: Buffer): number;
  /**
   * Writes `data` at `position` (any alignment; partial sectors read-modify-write under an exclusive
   * range lock). Returns bytes written (fewer when the volume ends first). When it returns, the
   * ciphertext has reached the image file (pwrite done; durable after sync()).
   */
  write(position: number, data: Buffer): number;
  /** fdatasync (datasync) or fsync of the image. */
  sync(datasync: boolean): void;
  /**
   * Drops this thread's key schedules whose keyring slot was wiped or reused. Cheap (a few atomic
   * loads): serving threads call it before every request. Returns whether this thread still holds
   * any key schedule.
   */
  refresh(): boolean;
  /** Wipes this thread's key schedules; every later call throws LOCKED. */
  close(): void;
}
