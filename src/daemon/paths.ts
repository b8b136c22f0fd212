// Where the daemon keeps its socket, pid file, locks and log, and where disk files appear.
import { join } from 'node:path';
import { DEFAULT_KEY_STORE, DEFAULT_PROVIDERS, envSet } from '../errors/env.js';

export interface RuntimePaths {
  /** Directory holding one plaintext disk file per open volume: /run/atrest/NAME. */
  runDir: string;
  /** Daemon-private directory (0700): control socket, pid file, image locks, log. */
  stateDir: string;
  socket: string;
  pidFile: string;
  lockDir: string;
  logFile: string;
  /** Platform key store (ATREST_KEY_STORE, default /var/lib/atrest/keys); --key-store overrides it. */
  keyStore: string;
  /** Audit log of key events, JSON lines (ATREST_AUDIT_LOG, default /var/log/atrest/audit.log). */
  auditLog: string;
  /** KEK provider configuration (ATREST_PROVIDERS, default /etc/atrest/providers.json); --providers overrides it. */
  providers: string;
}

/**
 * Paths from the environment (ATREST_RUN_DIR, ATREST_STATE_DIR, ATREST_KEY_STORE, ATREST_AUDIT_LOG,
 * ATREST_PROVIDERS) or the defaults.
 */
export function runtimePaths(env: NodeJS.ProcessEnv = process.env): RuntimePaths {
  const runDir = envSet('ATREST_RUN_DIR', env) ?? '/run/atrest';
  const stateDir = envSet('ATREST_STATE_DIR', env) ?? '/run/atrestd';
  return {
    runDir,
    stateDir,
    socket: join(stateDir, 'control.sock'),
    pidFile: join(stateDir, 'daemon.pid'),
    lockDir: join(stateDir, 'locks'),
    logFile: join(stateDir, 'daemon.log'),
    keyStore: envSet('ATREST_KEY_STORE', env) ?? DEFAULT_KEY_STORE,
    auditLog: envSet('ATREST_AUDIT_LOG', env) ?? '/var/log/atrest/audit.log',
    providers: envSet('ATREST_PROVIDERS', env) ?? DEFAULT_PROVIDERS,
  };
}

/** Volume names become file names under runDir: keep them boring. */
export const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
