// Which FUSE backend serves the disk files and with how many workers: parsing and validating the daemon's settings.
import { availableParallelism } from 'node:os';
import { envSet } from '../errors/env.js';
import { AtrestError } from '../errors/index.js';
import { loadFuseNative } from './native.js';

/** kernel: atrest speaks the FUSE kernel protocol itself (default); libfuse: the optional libfuse2 binding. */
export type FuseBackend = 'kernel' | 'libfuse';
export const FUSE_BACKENDS: readonly FuseBackend[] = ['kernel', 'libfuse'];
export const DEFAULT_FUSE_BACKEND: FuseBackend = 'kernel';
/**
 * Serving threads per volume by default: one per core, at least 2 (one can wait on the disk while the
 * other serves), at most 8. More threads than cores only add preemption, some of it of a thread that
 * holds the image's inode lock: on 2 cores, 4 threads took 12.2 CPU s per GiB of 4 KiB random writes
 * and 2 took 9.5 (reads 8.2 vs 6.6, 1 MiB writes 2.6 vs 2.4; npm run bench). An image mostly read
 * from the device rather than the page cache wants more (each thread has one request at the image).
 */
export const DEFAULT_FUSE_WORKERS = Math.min(8, Math.max(2, availableParallelism()));
export const MAX_FUSE_WORKERS = 64;
/** The kernel backend negotiates FUSE 7.31 and later; a forced maximum below that could never mount. */
export const MIN_FUSE_MINOR = 31;
export const MAX_FUSE_MINOR = 255;

/** The backend named by `value` (from `source`, e.g. "--fuse-backend"); USAGE naming both otherwise. */
export function parseFuseBackend(value: unknown, source: string): FuseBackend {
  if (typeof value === 'string' && (FUSE_BACKENDS as readonly string[]).includes(value)) {
    return value as FuseBackend;
  }
  throw new AtrestError(
    'USAGE',
    `${source}: unknown FUSE backend ${JSON.stringify(value)}: choose ${FUSE_BACKENDS.join(' or ')}`,
    { hint: 'kernel is the default; libfuse is the optional fallback (needs the fuse-native binding built)' },
  );
}

function wholeNumber(value: unknown, source: string, what: string, min: number, max: number): number {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^\d+$/.test(value.trim())
        ? Number(value)
        : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new AtrestError(
      'USAGE',
      `${source}: ${what} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value)}`,
    );
  }
  return n;
}

/** FUSE worker threads of the kernel backend: 1..64. */
export function parseFuseWorkers(value: unknown, source: string): number {
  return wholeNumber(value, source, 'the FUSE worker count', 1, MAX_FUSE_WORKERS);
}

/** Tests only: the highest FUSE protocol minor the kernel backend accepts (31..255). */
export function parseFuseMaxMinor(value: unknown, source: string): number {
  return wholeNumber(value, source, 'the highest FUSE minor version', MIN_FUSE_MINOR, MAX_FUSE_MINOR);
}

/** The daemon's FUSE settings; `backend` undefined means "the configuration file's, else kernel". */
export interface FuseSettings {
  backend?: FuseBackend;
  workers: number;
  maxMinor?: number;
}

/**
 * The daemon's FUSE settings from its options and environment, validated up front: a flag wins over
 * ATREST_FUSE_BACKEND / ATREST_FUSE_WORKERS; ATREST_FUSE_MAX_MINOR is for tests only.
 */
export function fuseSettings(
  flags: { backend?: string | undefined; workers?: number | undefined },
  env: NodeJS.ProcessEnv,
): FuseSettings {
  const out: FuseSettings = { workers: DEFAULT_FUSE_WORKERS };
  const backend = envSet('ATREST_FUSE_BACKEND', env);
  if (flags.backend !== undefined) out.backend = parseFuseBackend(flags.backend, '--fuse-backend');
  else if (backend !== undefined) out.backend = parseFuseBackend(backend, 'ATREST_FUSE_BACKEND');
  const workers = envSet('ATREST_FUSE_WORKERS', env);
  if (flags.workers !== undefined) out.workers = parseFuseWorkers(flags.workers, '--fuse-workers');
  else if (workers !== undefined) out.workers = parseFuseWorkers(workers, 'ATREST_FUSE_WORKERS');
  const maxMinor = envSet('ATREST_FUSE_MAX_MINOR', env);
  if (maxMinor !== undefined) out.maxMinor = parseFuseMaxMinor(maxMinor, 'ATREST_FUSE_MAX_MINOR');
  return out;
}

/**
 * Fails up front when `backend` cannot serve here: the libfuse fallback needs its optional binding
 * (MISSING_TOOL naming why and what to install). The kernel backend needs only /dev/fuse.
 */
export function requireFuseBackend(backend: FuseBackend): void {
  if (backend === 'libfuse') loadFuseNative();
}
