// Every ATREST_* environment variable in one table (name, meaning, default, validation) and the only code that reads them.
//
// It lives in errors/, the bottom layer, because every layer reads a variable (crypto: the KDF budget,
// luks2: the lock directory, fuse, daemon, cli) and a module here can be imported by all of them
// without importing upward; it needs nothing but AtrestError for its USAGE errors. Callers that take
// an env object (tests) pass it through; the default is process.env. A value that is also a
// command-line flag is validated by the one parser the flag uses too (named in `validation`), so a
// flag and its variable can never disagree; the others are validated here.
import { AtrestError } from './index.js';

export interface EnvVar {
  name: string;
  /** What it does (the man page's text, without the default). */
  meaning: string;
  /** The default when unset or empty, as the man page says it; null: off. */
  default: string | null;
  /** What a valid value is and who checks it (USAGE naming the variable otherwise). */
  validation: string;
  /** For tests and benchmarks only: not in the man page. */
  internal?: true;
}

/** The platform key store's directory when neither ATREST_KEY_STORE nor --key-store names one (keys/platform.ts). */
export const DEFAULT_KEY_STORE = '/var/lib/atrest/keys';
/** The key provider configuration file when neither ATREST_PROVIDERS nor --providers names one (keys/provider-config.ts). */
export const DEFAULT_PROVIDERS = '/etc/atrest/providers.json';

/** The table: every ATREST_* variable atrest reads (a test checks nothing else is read). */
export const ENV_VARS = [
  {
    name: 'ATREST_RUN_DIR',
    meaning: 'directory of the plaintext disk files',
    default: '/run/atrest',
    validation: 'any path',
  },
  {
    name: 'ATREST_STATE_DIR',
    meaning: "the daemon's control socket, pid file, locks and log",
    default: '/run/atrestd',
    validation: 'any path',
  },
  {
    name: 'ATREST_KEY_STORE',
    meaning: 'platform key store directory; --key-store overrides it',
    default: DEFAULT_KEY_STORE,
    validation: 'any path (the key store checks owner and mode when used)',
  },
  {
    name: 'ATREST_AUDIT_LOG',
    meaning: 'audit log of key events, JSON lines',
    default: '/var/log/atrest/audit.log',
    validation: 'any path',
  },
  {
    name: 'ATREST_PROVIDERS',
    meaning: 'customer key providers; --providers overrides it',
    default: DEFAULT_PROVIDERS,
    validation: 'any path (loadProviders checks the file)',
  },
  {
    name: 'ATREST_CONFIG',
    meaning: 'configuration file of the daemon; --config overrides it',
    default: '/etc/atrest/volumes.json',
    validation: 'any path (loadConfig checks the file)',
  },
  {
    name: 'ATREST_KEY_CHECK_INTERVAL',
    meaning: 'seconds between KEK checks of the daemon; --key-check-interval overrides it',
    default: '5',
    validation: 'a number from 0.1 to 3600 (keyCheckIntervalSeconds here, as for its flag)',
  },
  {
    name: 'ATREST_KEY_UNREACHABLE_GRACE',
    meaning:
      'seconds volumes stay open while their key server (kmip) cannot be reached, then they lock; --key-unreachable-grace overrides it',
    default: '600',
    validation:
      'seconds from 0 to 86400 (daemon/unreachable-grace.ts parseUnreachableGrace, as for its flag)',
  },
  {
    name: 'ATREST_KDF_MAX_MEMORY',
    meaning: 'the most memory one key derivation (Argon2) may use, KiB or 512M/2G',
    default: '1 GiB',
    validation: 'a positive amount, KiB or with K/M/G (envKdfMaxMemoryKiB here)',
  },
  {
    name: 'ATREST_KDF_MAX_SECONDS',
    meaning: 'the most seconds one key derivation may run before it fails with KDF_BUDGET',
    default: '60',
    validation: 'a positive number of seconds (envKdfMaxSeconds here)',
  },
  {
    name: 'ATREST_FIPS',
    meaning: '1: the daemon behaves as with --fips',
    default: null,
    validation: 'only 1 turns it on',
  },
  {
    name: 'ATREST_CRYPTO_WORKERS',
    meaning: 'crypto worker threads',
    default: 'one per core',
    validation: 'a number (the crypto pool clamps it)',
  },
  {
    name: 'ATREST_CRYPTO_INLINE_MAX',
    meaning: 'runs up to this many bytes are encrypted on the calling thread',
    default: '16384',
    validation: 'a number of bytes',
  },
  {
    name: 'ATREST_HOST_MNT_NS',
    meaning: "the host's mount namespace, where mounts are made when the daemon runs in its own",
    default: '/proc/1/ns/mnt',
    validation: 'any path',
  },
  {
    name: 'ATREST_FUSE_BACKEND',
    meaning:
      "the daemon's FUSE backend: kernel or libfuse (the optional fallback); --fuse-backend overrides it, it overrides the configuration file's fuseBackend",
    default: 'kernel',
    validation: 'kernel or libfuse (fuse/backend.ts parseFuseBackend, as for its flag)',
  },
  {
    name: 'ATREST_FUSE_WORKERS',
    meaning:
      'threads serving FUSE requests per volume with the kernel backend, 1 to 64; --fuse-workers overrides it',
    default: 'one per core, 2 to 8',
    validation: 'a whole number from 1 to 64 (fuse/backend.ts parseFuseWorkers, as for its flag)',
  },
  {
    name: 'ATREST_DEBUG',
    meaning: 'set: internal errors also print their stack',
    default: null,
    validation: 'any non-empty value turns it on',
  },
  {
    name: 'ATREST_TEST_KILL_AT',
    meaning: 'POINT:N: SIGKILL the process the N-th time it reaches crash point POINT (crash tests)',
    default: null,
    validation: 'POINT or POINT:N',
    internal: true,
  },
  {
    name: 'ATREST_BENCH_PLAIN',
    meaning: '1: the daemon may serve an image unencrypted (npm run bench)',
    default: null,
    validation: 'only 1 turns it on',
    internal: true,
  },
  {
    name: 'ATREST_FUSE_MAX_MINOR',
    meaning: 'the highest FUSE protocol minor the kernel backend accepts (tests of older kernels)',
    default: 'what the kernel offers',
    validation: 'a whole number from 31 to 255 (fuse/backend.ts parseFuseMaxMinor)',
    internal: true,
  },
] as const satisfies readonly EnvVar[];

/** The name of a variable of the table (a typo is a compile error). */
export type EnvName = (typeof ENV_VARS)[number]['name'];

/** The variable's value exactly as set (an empty string included), or undefined. */
export function envValue(name: EnvName, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[name];
}

/** The variable's value when set and not empty, else undefined (empty means "the default"). */
export function envSet(name: EnvName, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** Whether a switch variable is on: exactly "1". */
export function envFlag(name: EnvName, env: NodeJS.ProcessEnv = process.env): boolean {
  return env[name] === '1';
}

function positive(
  name: EnvName,
  env: NodeJS.ProcessEnv,
  scale: (n: number, unit: string) => number,
  hint: string,
): number | undefined {
  const text = envSet(name, env);
  if (text === undefined) return undefined;
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  const n = m ? scale(Number(m[1]), (m[2] ?? '').toUpperCase()) : NaN;
  if (!Number.isFinite(n) || n <= 0) {
    throw new AtrestError('USAGE', `${name}=${JSON.stringify(text)} is not a positive amount`, { hint });
  }
  return n;
}

const KIB_UNITS: Record<string, number> = {
  '': 1,
  K: 1,
  KB: 1,
  KIB: 1,
  M: 1024,
  MB: 1024,
  MIB: 1024,
  G: 1 << 20,
  GB: 1 << 20,
  GIB: 1 << 20,
};

/** ATREST_KDF_MAX_MEMORY in KiB (a number of KiB, or with K/M/G), undefined when unset; USAGE otherwise. */
export function envKdfMaxMemoryKiB(env: NodeJS.ProcessEnv = process.env): number | undefined {
  return positive(
    'ATREST_KDF_MAX_MEMORY',
    env,
    (n, u) => {
      const unit = KIB_UNITS[u];
      return unit === undefined ? NaN : Math.floor(n * unit);
    },
    'e.g. 1G, 512M or 1048576 (KiB)',
  );
}

/** ATREST_KDF_MAX_SECONDS (a number, or with s), undefined when unset; USAGE otherwise. */
export function envKdfMaxSeconds(env: NodeJS.ProcessEnv = process.env): number | undefined {
  return positive(
    'ATREST_KDF_MAX_SECONDS',
    env,
    (n, u) => (u === '' || u === 'S' ? n : NaN),
    'a number of seconds, e.g. 60',
  );
}

/**
 * The daemon's seconds between KEK checks: its --key-check-interval (`flag`), else
 * ATREST_KEY_CHECK_INTERVAL (set but empty counts as 0), else 5; USAGE unless 0.1 to 3600.
 */
export function keyCheckIntervalSeconds(
  flag: number | undefined,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const interval = flag ?? Number(envValue('ATREST_KEY_CHECK_INTERVAL', env) ?? 5);
  if (!Number.isFinite(interval) || interval < 0.1 || interval > 3600) {
    throw new AtrestError('USAGE', `key check interval ${interval} s is out of range (0.1 to 3600)`);
  }
  return interval;
}
