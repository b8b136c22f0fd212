// The audit log: key events (unlock, wrap, rotate, revoke, lock, failures) as pino JSON lines, appended.
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';
import type { AuditSink, KeyEvent } from '../keys/index.js';

/**
 * An audit sink appending to `path` (created 0600, its directory 0700 if missing). Every line carries
 * `audit: true`, the event and its volume, slot, provider (URI without secrets) and KEK version.
 * Written synchronously so a line is on disk before the command reports success. Never a secret:
 * KeyEvent has no field that could hold one.
 */
export function fileAuditSink(path: string, extra: Record<string, unknown> = {}): AuditSink {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, 'a', 0o600));
  const log = pino(
    { base: { pid: process.pid, ...extra }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: path, sync: true, append: true }),
  );
  return (e: KeyEvent) => {
    const failed = e.event === 'unlock-failed' || e.event === 'lock' || e.event === 'revoke';
    log[failed ? 'warn' : 'info']({ audit: true, ...e }, `key ${e.event}`);
  };
}
