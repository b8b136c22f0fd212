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

/** The volume an event concerns: its image (or header) path and LUKS2 UUID. */
interface OfVolume {
  volume: string;
  uuid: string;
}

/** The KEK a bound keyslot is wrapped under: its URI without secrets, key id and version. */
interface OfKek {
  provider: string;
  keyId: string;
  kekVersion: number;
}

/** A passphrase (key file or recovery key) instead of a KEK. */
interface OfPassphrase {
  provider: 'passphrase';
}

/** A customer KEK named on the command line, optionally one version of it. */
interface OfCustomerKek {
  provider: string;
  kekVersion?: number | undefined;
}

/** What each kind of key event records besides its name; keyEvent takes exactly these. */
export interface KeyEventFields {
  unlock: OfVolume & { slot: number } & (OfKek | OfPassphrase);
  'unlock-failed': OfVolume & { code: string } & (
      ({ slot: number } & OfKek) | OfPassphrase | { reason: string }
    );
  wrap: OfVolume & { slot: number } & OfKek;
  /** A re-wrap under a newer KEK version, or (with a reason) a new volume key. */
  rotate: OfVolume & (({ slot: number; fromVersion: number } & OfKek) | { reason: string });
  'rotate-platform': { provider: 'platform:'; keyId: string; kekVersion: number };
  'delete-platform-version': {
    provider: 'platform:';
    keyId: string;
    kekVersion: number;
    reason?: string | undefined;
  };
  'use-kek': OfVolume & { slot: number; provider: string; kekVersion: number };
  'add-recovery': OfVolume & { slot: number };
  /** A bound keyslot names its KEK; a recovery or passphrase keyslot has none. */
  'remove-keyslot': OfVolume & {
    slot: number;
    provider?: string | undefined;
    kekVersion?: number | undefined;
  };
  revoke: OfCustomerKek;
  restore: OfCustomerKek;
  lock: OfVolume & {
    name: string;
    slot: number;
    provider?: string | undefined;
    kekVersion?: number | undefined;
    reason: string;
  };
}

/** The order fields appear in a log line (after `event`); every KeyEvent field is listed. */
export const KEY_EVENT_FIELD_ORDER = [
  'name',
  'volume',
  'uuid',
  'slot',
  'provider',
  'keyId',
  'kekVersion',
  'fromVersion',
  'code',
  'reason',
] as const satisfies readonly Exclude<keyof KeyEvent, 'event'>[];

/**
 * The one way to build an audit entry: the fields of its kind, written in KEY_EVENT_FIELD_ORDER, fields
 * given as undefined left out (so a line has the same keys, values and order wherever it is recorded).
 */
export function keyEvent<E extends KeyEventName>(event: E, fields: KeyEventFields[E]): KeyEvent {
  const e: KeyEvent = { event };
  const given = fields as Partial<Record<(typeof KEY_EVENT_FIELD_ORDER)[number], unknown>>;
  const out = e as unknown as Record<string, unknown>;
  for (const k of KEY_EVENT_FIELD_ORDER) if (given[k] !== undefined) out[k] = given[k];
  return e;
}
