// A private atrest environment for benchmark scripts: its own run and state dirs, key store and audit log.
import { join } from 'node:path';

/** The environment for `atrest` commands (and the daemon they start) that keeps everything under `dir`. */
export function privateEnv(dir, extra = {}) {
  return {
    ...process.env,
    ATREST_RUN_DIR: join(dir, 'run'),
    ATREST_STATE_DIR: join(dir, 'state'),
    ATREST_KEY_STORE: join(dir, 'keys'),
    ATREST_AUDIT_LOG: join(dir, 'audit.log'),
    ATREST_PROVIDERS: join(dir, 'providers.json'),
    ...extra,
  };
}
