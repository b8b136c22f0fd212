// KeyCommandContext: what the `atrest key ...` commands (keys.ts, platform-delete.ts) need from the CLI around them.
import type { KeyManager } from '../keys/index.js';

/** What key commands need from the CLI around them. */
export interface KeyCommandContext {
  /** A key manager for these global options (key store, FIPS, audit log). */
  manager(kekOverride?: string): KeyManager;
  /** Reads --key-file FILE or - (stdin); caller wipes. */
  loadKey(keyFile: string): Promise<Buffer>;
}
