// FuseDisk: the handle of one disk file served through FUSE, whichever backend serves it (kernel or libfuse).
// Imports nothing that serves, so serve.ts and the kernel backend (serve-kernel.ts, kernel/session.ts) can both name it.
import type { FuseBackend } from './backend.js';

export interface FuseDisk {
  readonly mountPath: string;
  /** Which backend serves it. */
  readonly backend: FuseBackend;
  /** FUSE connection number (/sys/fs/fuse/connections/N). */
  readonly connection: number;
  /** The mount options passed to libfuse. */
  readonly options: string;
  /** Requests being served now. */
  readonly inFlight: number;
  /** Unmounts robustly, waits for requests in flight, releases the native side. Idempotent. */
  close(): Promise<void>;
  /**
   * Kernel backend: makes every serving thread drop its key schedules (after the keyring was wiped)
   * and resolves true once all acknowledged. The libfuse backend serves from the main thread and has none.
   */
  dropKeys?(): Promise<boolean>;
}
