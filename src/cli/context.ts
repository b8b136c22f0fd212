// CliContext: what every command's action gets from the CLI around it (runtime paths, global options, key manager, key input).
import { KeyManager, type AuditSink } from '../keys/index.js';
import { fileAuditSink } from '../daemon/audit.js';
import type { RuntimePaths } from '../daemon/paths.js';
import { loadKey } from './key-input.js';

/** The global options (--key-store, --providers, --fips), resolved. */
export interface Globals {
  keyStore: string;
  fips: boolean;
  providers: string;
}

export interface CliContext {
  readonly paths: RuntimePaths;
  /** Set by the global options' middleware before any command runs (options.ts globalsOf). */
  globals: Globals;
  /** Set by `atrest daemon` once it serves: main() then returns -1 and the process keeps running. */
  keepRunning: boolean;
  /** A key manager for these global options (key store, FIPS, audit log). */
  manager(kekOverride?: string): KeyManager;
  /** Reads --key-file FILE or - (stdin); caller wipes. */
  loadKey(keyFile: string): Promise<Buffer>;
}

/** What the `atrest key ...` commands (commands/key.ts, key-delete-platform-version.ts) need. */
export type KeyCommandContext = Pick<CliContext, 'manager' | 'loadKey'>;

/** A context for one run of main(): the audit log is opened on the first key manager's need. */
export function createContext(paths: RuntimePaths): CliContext {
  let audit: AuditSink | null = null;
  const ctx: CliContext = {
    paths,
    globals: { keyStore: paths.keyStore, fips: false, providers: paths.providers },
    keepRunning: false,
    manager: (kekOverride?: string): KeyManager => {
      audit ??= fileAuditSink(paths.auditLog, { source: 'cli' });
      return new KeyManager({
        keyStoreDir: ctx.globals.keyStore,
        providersFile: ctx.globals.providers,
        audit,
        fips: ctx.globals.fips,
        ...(kekOverride === undefined ? {} : { kekOverride }),
      });
    },
    loadKey,
  };
  return ctx;
}
