// Key events for the audit log: what happened to which volume, slot, provider and KEK version; never secrets.

/** The key events atrest records. */
export type KeyEventName =
  | 'unlock'
  | 'unlock-failed'
  | 'wrap'
  | 'rotate'
  | 'rotate-platform'
  | 'delete-platform-version'
  | 'use-kek'
  | 'add-recovery'
  | 'remove-keyslot'
  | 'revoke'
  | 'restore'
  | 'lock';

export interface KeyEvent {
  event: KeyEventName;
  /** Image (or header) path of the volume, when the event concerns one. */
  volume?: string;
  uuid?: string;
  /** Name the volume is served under. */
  name?: string;
  slot?: number;
  /** KEK URI without secrets (see redactUri). */
  provider?: string;
  keyId?: string;
  kekVersion?: number;
  /** Previous version, for rotations. */
  fromVersion?: number;
  /** Error code for failures (AtrestError code). */
  code?: string;
  reason?: string;
}

/** Where key events go: a pino logger in the CLI and the daemon, an array in tests. */
export type AuditSink = (event: KeyEvent) => void;

export const NO_AUDIT: AuditSink = () => undefined;
