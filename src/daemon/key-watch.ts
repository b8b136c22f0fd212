// The periodic KEK check of open volumes: locks a volume whose KEK is revoked or unavailable (after the unreachable grace), re-wraps tokens under a newer KEK version.
// The loop is a Periodic (periodic.ts): each pass is bounded and the next one is always scheduled, so nothing a
// provider, a header read or a lock does can wedge it; each call inside a pass is bounded and single-flight.
import type { Logger } from 'pino';
import {
  bindings,
  keyEvent,
  redactUri,
  type AuditSink,
  type KekBinding,
  type KekProvider,
  type KekRef,
} from '../keys/index.js';
import { readLuks2, type Luks2Metadata } from '../luks2/index.js';
import type { LiveBinding, OpenVolume } from './open-volume.js';
import { Periodic, SingleFlight, withTimeout } from './periodic.js';
import { classifyCheckFailure, UnreachableGrace, type Outage } from './unreachable-grace.js';

/** Default interval of the KEK check (revocation, new versions): well inside the 10 s promise. */
export const DEFAULT_KEY_CHECK_INTERVAL_MS = 5000;
/**
 * How long one call of the KEK check (a provider's availability, re-reading a header) may take. A
 * provider that does not answer in time counts as unavailable, like an unreachable one, so a hung
 * provider locks its volumes instead of stalling the check.
 */
export const DEFAULT_KEY_CHECK_TIMEOUT_MS = 5000;

export interface KeyWatchOptions {
  log: Logger;
  audit: AuditSink;
  /** Pause between passes. */
  intervalMs: number;
  /** Bound on each call of a pass (a provider's availability, a header read). */
  timeoutMs: number;
  /** How long volumes stay open while their key server cannot be reached (unreachable-grace.ts). */
  graceMs: number;
  /** Tests: the clock of the unreachable grace period (default Date.now). */
  graceClock?: () => number;
}

export class KeyWatch {
  /** The KEK check loop: self-rescheduling, each pass bounded (see Periodic). */
  private readonly keyChecks: Periodic;
  /** Calls of the KEK check still running (a hung provider or header read is not started again). */
  private readonly checkCalls = new SingleFlight<unknown>();
  /** Volumes whose token is being re-wrapped now (never two re-wraps of one header at once). */
  private readonly rewrapping = new Set<OpenVolume>();
  private readonly log: Logger;
  private readonly audit: AuditSink;
  /** Volumes whose key server is unreachable, in their grace period. */
  private readonly grace: UnreachableGrace<OpenVolume>;

  /** `volumes`: the service's open volumes by name (read here, never changed). */
  constructor(
    private readonly volumes: ReadonlyMap<string, OpenVolume>,
    private readonly opts: KeyWatchOptions,
  ) {
    this.log = opts.log;
    this.audit = opts.audit;
    this.grace = new UnreachableGrace({
      graceMs: opts.graceMs,
      log: this.log,
      ...(opts.graceClock === undefined ? {} : { now: opts.graceClock }),
    });
    this.keyChecks = new Periodic(() => this.checkKeys(), {
      intervalMs: opts.intervalMs,
      // a pass waits for header reads and providers (each bounded), then a lock or re-wrap
      passTimeoutMs: 3 * opts.timeoutMs,
      onError: (err) =>
        this.log.error(
          { event: 'key-check-failed', err: String(err) },
          'KEK check pass failed; next pass scheduled',
        ),
    });
  }

  /** Passes finished so far (completed, failed or abandoned). */
  get passes(): number {
    return this.keyChecks.passes;
  }

  /** Starts the checks: each pass is scheduled when the last one ends (or is abandoned after its bound). */
  start(): void {
    this.keyChecks.start();
  }

  /** Stops scheduling; waits (at most the pass bound) for a pass in progress. */
  stop(): Promise<void> {
    return this.keyChecks.stop();
  }

  /** How long volumes stay open while their key server cannot be reached. */
  get graceMs(): number {
    return this.grace.graceMs;
  }

  /** The key-server outage of `v` now, if any (for status). */
  outage(v: OpenVolume): Outage | undefined {
    return this.grace.outage(v);
  }

  /**
   * One pass of the KEK check: a volume whose KEK is revoked or unavailable is locked; a newer KEK
   * version is picked up by re-wrapping the token. Volumes are checked side by side, so one whose
   * provider hangs does not delay the others; one volume's failure never stops the rest.
   */
  async checkKeys(): Promise<void> {
    const checks = [...this.volumes.values()].map(async (v) => {
      if (v.locked !== null || v.binding === null) return;
      try {
        await this.checkVolume(v, v.binding);
      } catch (err) {
        this.log.error(
          { event: 'key-check-failed', volume: v.name, code: (err as { code?: unknown }).code },
          'KEK check of a volume failed',
        );
      }
    });
    await Promise.all(checks);
  }

  /** A call of the KEK check, at most one running per key, bounded by the check timeout. */
  private checkCall<T>(key: string, what: string, fn: () => Promise<T>): Promise<T> {
    return withTimeout(this.checkCalls.run(key, fn) as Promise<T>, this.opts.timeoutMs, what);
  }

  /** Whether `v` is still the open volume of its name (it may have been closed during a check). */
  private isOpen(v: OpenVolume): boolean {
    return this.volumes.get(v.name) === v;
  }

  /**
   * Checks the KEKs a volume depends on, as its header says now (`atrest key use` or `key rotate` may
   * have changed them while it is open): if none is available, the volume is locked; an available KEK
   * with a newer version gets its token re-wrapped.
   */
  private async checkVolume(v: OpenVolume, live: LiveBinding): Promise<void> {
    let onDisk: KekBinding[] = [];
    let meta: Luks2Metadata | null = null;
    try {
      meta = await this.checkCall(`header\0${v.header}`, 're-reading the header', () =>
        readLuks2(v.header, { imagePath: v.image }),
      );
      onDisk = bindings(meta);
    } catch (err) {
      this.log.warn(
        { event: 'header-read-failed', volume: v.name, code: (err as { code?: unknown }).code },
        'could not re-read the header; checking the KEK the volume was opened with',
      );
    }
    const candidates: Array<Omit<KekBinding, 'wrapped' | 'wrapAlg'> & { wrapped?: Buffer }> =
      onDisk.length > 0 ? onDisk : [live];
    const available: Array<{ c: (typeof candidates)[number]; ref: KekRef; provider: KekProvider }> = [];
    let unreachable: string | null = null;
    for (const c of candidates) {
      let provider: KekProvider | undefined;
      try {
        // what the header names now goes through the host's provider configuration, like any token
        const r = await live.km.resolve(c.kek);
        provider = r.provider;
        const p = provider;
        const ref: KekRef = { uri: r.uri, keyId: c.keyId, version: c.version };
        const key = `kek\0${v.name}\0${c.tokenId}\0${r.uri}\0${c.keyId}\0${c.version}`;
        if (await this.checkCall(key, 'KEK check', () => p.available(ref)))
          available.push({ c, ref, provider });
      } catch (err) {
        // a revoked, unknown, refused or unconfigured KEK counts as unavailable; an unreachable key
        // server (or a network provider silent past the check bound) gets the grace period
        if (classifyCheckFailure(err, provider) === 'unreachable')
          unreachable ??= `${redactUri(c.kek)} version ${c.version}: ${(err as Error).message}`;
      }
    }
    if (!this.isOpen(v)) return; // closed meanwhile: its keys are gone already
    const first = available[0];
    if (first === undefined) {
      if (unreachable !== null && this.grace.unreachable(v, unreachable)) return; // open, in its grace
      const what = candidates.map((c) => `${redactUri(c.kek)} version ${c.version}`).join(', ');
      this.grace.forget(v);
      await this.lockVolume(
        v,
        unreachable !== null
          ? `key server unreachable for longer than the grace period (${this.grace.graceMs / 1000} s): ${what}`
          : `key revoked or unavailable: ${what}`,
      );
      return;
    }
    this.grace.reachable(v);
    Object.assign(live, {
      type: first.c.type,
      tokenId: first.c.tokenId,
      keyslot: first.c.keyslot,
      kek: first.c.kek,
      keyId: first.c.keyId,
      version: first.c.version,
      ref: first.ref,
      provider: first.provider,
    });
    if (meta === null || this.rewrapping.has(v)) return;
    this.rewrapping.add(v);
    try {
      await this.rewrapNewer(v, live, meta, onDisk, available);
    } finally {
      this.rewrapping.delete(v);
    }
  }

  /** Re-wraps the volume's tokens whose KEK has a newer version. */
  private async rewrapNewer(
    v: OpenVolume,
    live: LiveBinding,
    meta: Luks2Metadata,
    onDisk: KekBinding[],
    available: Array<{ c: { tokenId: number }; ref: KekRef; provider: KekProvider }>,
  ): Promise<void> {
    for (const { c, ref, provider } of available) {
      if (!this.isOpen(v) || v.locked !== null) return;
      const b = onDisk.find((x) => x.tokenId === c.tokenId);
      if (b === undefined) continue;
      try {
        const cur = await provider.current(ref.uri);
        if (cur.version === b.version && cur.keyId === b.keyId) continue;
        const r = await live.km.rewrap(meta, b);
        if (r === null) continue;
        if (b.tokenId === live.tokenId) {
          live.version = r.to;
          live.keyId = cur.keyId;
          live.ref = { ...live.ref, keyId: cur.keyId, version: r.to };
        }
        this.log.info(
          { event: 'rewrap', volume: v.name, provider: redactUri(b.kek), from: r.from, to: r.to },
          'picked up a new KEK version',
        );
      } catch (err) {
        this.log.warn(
          { event: 'rewrap-failed', volume: v.name, code: (err as { code?: unknown }).code },
          'could not re-wrap under a newer KEK version',
        );
      }
    }
  }

  /**
   * Locks a volume for good: no new I/O, waits for what is in flight, wipes all its keys (a
   * conversion's old or new key too) in the main thread and every worker. Its disk file then fails
   * all I/O with EIO; nothing more reaches the image.
   */
  async lockVolume(v: OpenVolume, reason: string): Promise<void> {
    if (v.locked !== null) return;
    v.locked = { reason, at: new Date() };
    v.volume.lock(reason);
    v.conversion?.converter.stop();
    try {
      await v.volume.settle();
    } finally {
      await v.keys.wipeAll();
      // the serving threads' copies of the key schedule go too (the keyring slots are empty now)
      if ((await v.disk.dropKeys?.()) === false) {
        this.log.error(
          { event: 'lock-drop-keys-timeout', volume: v.name },
          'a FUSE worker did not confirm it dropped its key schedule in time',
        );
      }
    }
    this.audit(
      keyEvent('lock', {
        name: v.name,
        volume: v.image,
        uuid: v.uuid,
        slot: v.keyslot,
        provider: v.binding ? redactUri(v.binding.kek) : undefined,
        kekVersion: v.binding?.version,
        reason,
      }),
    );
    this.log.error({ event: 'locked', volume: v.name, reason }, 'volume locked, keys wiped');
  }
}
