// Where the daemon keeps its socket, pid file, locks and log, and where disk files appear.
import { join } from 'node:path';

export interface RuntimePaths {
  /** Directory holding one plaintext disk file per open volume: /run/atrest/NAME. */
  runDir: string;
  /** Daemon-private directory (0700): control socket, pid file, image locks, log. */
  stateDir: string;
  socket: string;
  pidFile: string;
  lockDir: string;
  logFile: string;
}

/** Paths from the environment (ATREST_RUN_DIR, ATREST_STATE_DIR) or the defaults under /run. */
export function runtimePaths(env: NodeJS.ProcessEnv = process.env): RuntimePaths {
  const runDir = env.ATREST_RUN_DIR || '/run/atrest';
  const stateDir = env.ATREST_STATE_DIR || '/run/atrestd';
  return {
    runDir,
    stateDir,
    socket: join(stateDir, 'control.sock'),
    pidFile: join(stateDir, 'daemon.pid'),
    lockDir: join(stateDir, 'locks'),
    logFile: join(stateDir, 'daemon.log'),
  };
}

/** Volume names become file names under runDir: keep them boring. */
export const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
