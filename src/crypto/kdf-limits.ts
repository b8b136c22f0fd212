// KDF parameter limits in one place: cryptsetup's hard limits (refused outright) and atrest's configurable budget (memory, seconds).
import { envKdfMaxMemoryKiB, envKdfMaxSeconds } from '../errors/env.js';
import { AtrestError } from '../errors/index.js';

/** cryptsetup's floor for PBKDF2 iterations of new keyslots (lib/crypto_backend/pbkdf_check.c). */
export const PBKDF2_MIN_ITERATIONS = 1000;
/**
 * The most PBKDF2 iterations (and Argon2 time cost) a LUKS2 header can carry for cryptsetup: json-c
 * reads them as int32 (lib/luks2/luks2_keyslot_luks2.c json_object_get_int; the OpenSSL backend
 * refuses iterations > INT_MAX too). Larger values are refused.
 */
export const KDF_MAX_ITERATIONS = 0x7fff_ffff;
/** Argon2 memory cost limits of cryptsetup, KiB (pbkdf_check.c: 32 KiB .. 4 GiB). */
export const ARGON2_MIN_MEMORY_KIB = 32;
export const ARGON2_MAX_MEMORY_KIB = 4 * 1024 * 1024;
/** Argon2 parallelism (threads/lanes) limits of cryptsetup (pbkdf_check.c: 1 .. 4). */
export const ARGON2_MIN_PARALLEL = 1;
export const ARGON2_MAX_PARALLEL = 4;

/** KDF parameters as a keyslot or digest carries them (fields by LUKS2 name). */
export interface KdfParams {
  type: string;
  iterations?: number;
  time?: number;
  memory?: number;
  cpus?: number;
}

/** Why `p` is beyond cryptsetup's own limits (so no cryptsetup made it), or null. */
export function kdfLimitViolation(p: KdfParams): string | null {
  const over = (what: string, v: number | undefined, min: number, max: number): string | null =>
    v === undefined || (v >= min && v <= max)
      ? null
      : `${what} ${v} is outside cryptsetup's limits (${min} to ${max})`;
  if (p.type === 'pbkdf2') return over('PBKDF2 iterations', p.iterations, 1, KDF_MAX_ITERATIONS);
  if (p.type === 'argon2i' || p.type === 'argon2id') {
    return (
      over(`${p.type} time cost`, p.time, 1, KDF_MAX_ITERATIONS) ??
      over(`${p.type} memory (KiB)`, p.memory, ARGON2_MIN_MEMORY_KIB, ARGON2_MAX_MEMORY_KIB) ??
      over(`${p.type} parallelism`, p.cpus, ARGON2_MIN_PARALLEL, ARGON2_MAX_PARALLEL)
    );
  }
  return null;
}

/** How much one key derivation may cost here; beyond it, it fails with KDF_BUDGET instead of running on. */
export interface KdfBudget {
  /** Most memory an Argon2 run may take, KiB. */
  maxMemoryKiB: number;
  /** Most wall-clock seconds one derivation may run (its worker thread is stopped then). */
  maxSeconds: number;
}

/** Defaults: 1 GiB (cryptsetup's default Argon2 memory), 60 s (cryptsetup's default is 2 s here). */
export const DEFAULT_KDF_BUDGET: Readonly<KdfBudget> = { maxMemoryKiB: 1024 * 1024, maxSeconds: 60 };

let override: KdfBudget | null = null;

/** Sets the budget for this process (null: back to the environment / defaults). */
export function setKdfBudget(b: KdfBudget | null): void {
  override = b === null ? null : { ...b };
}

/**
 * The budget in force: setKdfBudget's, else ATREST_KDF_MAX_MEMORY (KiB, or with K/M/G) and
 * ATREST_KDF_MAX_SECONDS from the environment, else DEFAULT_KDF_BUDGET.
 */
export function kdfBudget(env: NodeJS.ProcessEnv = process.env): KdfBudget {
  if (override !== null) return { ...override };
  const mem = envKdfMaxMemoryKiB(env);
  const secs = envKdfMaxSeconds(env);
  return {
    maxMemoryKiB: mem ?? DEFAULT_KDF_BUDGET.maxMemoryKiB,
    maxSeconds: secs ?? DEFAULT_KDF_BUDGET.maxSeconds,
  };
}

/** The KDF_BUDGET error for a derivation that needs more than the budget allows. */
export function overBudget(what: string): AtrestError {
  return new AtrestError('KDF_BUDGET', what, {
    hint: 'if this key slot is genuine, raise ATREST_KDF_MAX_MEMORY / ATREST_KDF_MAX_SECONDS (daemon and CLI environment) or use another key slot',
  });
}
