// Key-server outages of open volumes: a network KEK provider that cannot be reached keeps its volumes open for a grace period (warned once, recovery logged), then they lock.
//
// Design decision (README, "KMIP key servers"): a key server that *answers* that a key is revoked,
// deactivated, destroyed or unknown, or refuses the operation, locks at the next check as always. A
// server that cannot be *reached* (network, TLS, timeout) is a network blip more often than an attack,
// so its volumes stay open and usable for `graceMs`, with a warning in the log and in `status`; only
// when no check reached it for that long do they lock. The grace is tied to the error class, not a
// scheme: every provider that declares itself a network provider (`network: true`, today kmip) and
// every "key server unreachable" error get it; local providers (key files, the platform key, a
// PKCS#11 module) never report "unreachable", so for them unavailable means locked, as before.
import { isUnreachable } from '../keys/kmip/provider.js';
import { AtrestError } from '../errors/index.js';
import { TimeoutError } from './periodic.js';

/** Default grace before volumes whose key server cannot be reached are locked: 10 minutes. */
export const DEFAULT_UNREACHABLE_GRACE_MS = 10 * 60_000;
/** Largest grace accepted (one day): a longer one would make revocation meaningless during an outage. */
export const MAX_UNREACHABLE_GRACE_MS = 24 * 3600_000;

/** Validates a grace period given in seconds (the daemon's --key-unreachable-grace); returns ms. */
export function parseUnreachableGrace(seconds: unknown, from: string): number {
  const s = typeof seconds === 'string' && seconds.trim() !== '' ? Number(seconds) : seconds;
  if (typeof s !== 'number' || !Number.isFinite(s) || s < 0 || s * 1000 > MAX_UNREACHABLE_GRACE_MS) {
    throw new AtrestError(
      'USAGE',
      `${from}: key-server unreachable grace ${JSON.stringify(seconds)} is not a number of seconds from 0 to ${MAX_UNREACHABLE_GRACE_MS / 1000}`,
      { hint: 'give seconds, e.g. 600 (the default, 10 minutes); 0 locks at the first failed check' },
    );
  }
  return Math.round(s * 1000);
}

/**
 * How a failed availability check of one KEK counts: `unreachable` when the provider could not be
 * reached (its own unreachable error, or a network provider that did not answer within the check
 * bound), else `unavailable` (revoked, unknown, refused, not configured, any other failure).
 */
export function classifyCheckFailure(
  err: unknown,
  provider: { network?: boolean } | undefined,
): 'unreachable' | 'unavailable' {
  if (isUnreachable(err)) return 'unreachable';
  if (err instanceof TimeoutError && provider?.network === true) return 'unreachable';
  return 'unavailable';
}

export interface Outage {
  /** When a check first found the key server unreachable (ms since the epoch). */
  since: number;
  /** When the volume locks if no check reaches the server before. */
  locksAt: number;
  /** What could not be reached (provider reference and the error, no secrets). */
  detail: string;
}

interface GraceLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface UnreachableGraceOptions {
  graceMs: number;
  log: GraceLog;
  /** Clock (tests). */
  now?: () => number;
}

/** Outages per open volume (keyed by the volume object, so a reopened volume starts fresh). */
export class UnreachableGrace<V extends { name: string }> {
  readonly #outages = new WeakMap<V, Outage>();
  readonly #now: () => number;

  constructor(private readonly opts: UnreachableGraceOptions) {
    this.#now = opts.now ?? Date.now;
  }

  get graceMs(): number {
    return this.opts.graceMs;
  }

  /**
   * A check found no KEK of `v` available and at least one key server unreachable. Returns true while
   * the volume may stay open (the first time: a warning), false once the grace has run out.
   */
  unreachable(v: V, detail: string): boolean {
    const now = this.#now();
    let o = this.#outages.get(v);
    if (o === undefined) {
      o = { since: now, locksAt: now + this.opts.graceMs, detail };
      this.#outages.set(v, o);
      this.opts.log.warn(
        {
          event: 'key-server-unreachable',
          volume: v.name,
          detail,
          graceMs: this.opts.graceMs,
          locksAt: new Date(o.locksAt).toISOString(),
        },
        'key server unreachable: the volume stays open until the grace period ends',
      );
    } else {
      o.detail = detail;
    }
    return now < o.locksAt;
  }

  /** A check found a KEK of `v` available: ends its outage, if any (logged once). */
  reachable(v: V): void {
    const o = this.#outages.get(v);
    if (o === undefined) return;
    this.#outages.delete(v);
    this.opts.log.info(
      { event: 'key-server-reachable', volume: v.name, outageMs: this.#now() - o.since },
      'key server reachable again: the volume stays open',
    );
  }

  /** The outage of `v` now, if any (for status). */
  outage(v: V): Outage | undefined {
    return this.#outages.get(v);
  }

  /** Forgets `v`'s outage without logging (the volume locked or closed for another reason). */
  forget(v: V): void {
    this.#outages.delete(v);
  }
}
