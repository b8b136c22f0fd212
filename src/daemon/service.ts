// The set of open volumes: open (unlock, lock image, serve, loop), close (flush, detach, unmount, wipe), status.
import { mkdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CryptoPool, requireFips, type PoolKey } from '../crypto/index.js';
import type { CryptoPoolOptions } from '../crypto/index.js';
import { envFlag, envSet } from '../errors/env.js';
import { AtrestError, fromSystemError, isAtrestError } from '../errors/index.js';
import {
  bindings,
  ConversionKeyringAdapter,
  KeyManager,
  keySourceOf,
  KmipKekProvider,
  newKmipProvider,
  Pkcs11Provider,
  readKeyFile,
  redactUri,
  type AuditSink,
  type BindingType,
  type KekBinding,
  type KekProvider,
  type KekRef,
  type Unlocked,
} from '../keys/index.js';
import { readLuks2, resolvedDataSize, type Luks2Metadata } from '../luks2/index.js';
import {
  acquireImageLock,
  Converter,
  openConversion,
  PlainCipher,
  startReencrypt,
  Volume,
  type ConversionSplit,
  type ImageLock,
  type SectorCipher,
} from '../volume/index.js';
import type { Config, VolumeConfig } from './config.js';
import { Periodic, SingleFlight, withTimeout } from './periodic.js';
import { classifyCheckFailure, DEFAULT_UNREACHABLE_GRACE_MS, UnreachableGrace } from './unreachable-grace.js';
import { VolumeKeys, type KeyPool } from './volume-keys.js';
import { refuseNotLuks2 } from './plaintext-refusal.js';
import { notOpen } from './not-open.js';
import { mounts, serveDisk, spawnHelper, type FuseDisk } from '../fuse/index.js';
import { DEFAULT_FUSE_BACKEND, type FuseBackend, type FuseSettings } from '../fuse/backend.js';
import { VOLUME_NAME_RE, type RuntimePaths } from './paths.js';
import type { EncryptionStatus, OpenRequest, VolumeStatus } from './protocol.js';

/** Default interval of the KEK check (revocation, new versions): well inside the 10 s promise. */
export const DEFAULT_KEY_CHECK_INTERVAL_MS = 5000;
/**
 * How long one call of the KEK check (a provider's availability, re-reading a header) may take. A
 * provider that does not answer in time counts as unavailable, like an unreachable one, so a hung
 * provider locks its volumes instead of stalling the check.
 */
export const DEFAULT_KEY_CHECK_TIMEOUT_MS = 5000;

/** The KEK an open volume depends on, kept to check it and re-wrap when a new version appears. */
interface LiveBinding {
  type: BindingType;
  tokenId: number;
  keyslot: number;
  /** Stored URI (no PIN). */
  kek: string;
  keyId: string;
  version: number;
  /** Effective reference (may carry a PIN: never log it). */
  ref: KekRef;
  provider: KekProvider;
  km: KeyManager;
}

export interface VolumeServiceOptions {
  audit?: AuditSink;
  /** How often every open volume's KEK is checked (default 5 s). */
  keyCheckIntervalMs?: number;
  /** FIPS mode for every volume (the daemon's --fips). */
  fips?: boolean;
  /** Default platform key store. */
  keyStore?: string;
  /** Bound on each call of the KEK check (default 5 s): a provider slower than that is unavailable. */
  keyCheckTimeoutMs?: number;
  /**
   * How long volumes stay open while their key server cannot be reached (default 10 min; see
   * unreachable-grace.ts). A key the server reports revoked or unknown locks at once.
   */
  keyUnreachableGraceMs?: number;
  /** Tests: the KMIP provider every volume shares (default: one made on first use, like PKCS#11). */
  kmip?: KmipKekProvider;
  /** Tests: the clock of the unreachable grace period (default Date.now). */
  graceClock?: () => number;
  /** Tests: the crypto pool to use (default: one made on first use from the environment). */
  pool?: KeyPool & { destroy(): Promise<void> };
  /** Tests: serves a volume's disk file (default: FUSE). */
  serveDisk?: typeof serveDisk;
  /**
   * FUSE backend and workers (the daemon's --fuse-backend / --fuse-workers / ATREST_FUSE_*): a
   * backend given here wins over the configuration file's fuseBackend; default kernel.
   */
  fuse?: FuseSettings;
  /** Tests: called at named steps of open and reencrypt; throwing there injects a failure. */
  failPoint?: (name: string) => void;
}

/** What opening needs from the key side: where the data is and how to en/decrypt it. */
interface Layout {
  uuid: string;
  keyslot: number;
  dataOffset: number;
  size: number;
  sectorSize: number;
  ivTweak: number;
  /** Every key the volume holds in the pool (the caller wipes them all if opening fails later). */
  keys: VolumeKeys;
  /** The key it encrypts with (null: benchmark plaintext). */
  key: PoolKey | null;
  binding: LiveBinding | null;
  /** The file holding the header (a sidecar while an attached-header encryption runs). */
  header: string;
  conversion: { converter: Converter; split: ConversionSplit; oldKey: PoolKey | null } | null;
}

/**
 * Default fixed cap of online conversions: none (0). The converter yields to the volume's users
 * adaptively (src/volume/yield-controller.ts); --max-rate adds a cap on top.
 */
export const DEFAULT_ONLINE_RATE = 0;

interface OpenVolume {
  name: string;
  diskPath: string;
  image: string;
  header: string;
  uuid: string;
  sectorSize: number;
  size: number;
  keyslot: number;
  readOnly: boolean;
  loopDevice: string | null;
  openedAt: Date;
  volume: Volume;
  /** Every key of the volume in the pool: its current key and a conversion's other key. */
  keys: VolumeKeys;
  /** The key the volume encrypts with now (a reencryption replaces it). */
  key: PoolKey | null;
  disk: FuseDisk;
  lock: ImageLock;
  binding: LiveBinding | null;
  plain: boolean;
  locked: { reason: string; at: Date } | null;
  conversion: { converter: Converter; done: Promise<void> | null; oldKey: PoolKey | null } | null;
  /** Where the daemon mounted the loop device's filesystem (configured volumes), or null. */
  mountPoint: string | null;
}

/** Runs `fn` for each of `undo` in reverse, ignoring failures: used to unwind a half-done open. */
async function unwind(undo: Array<() => Promise<unknown>>): Promise<void> {
  for (const fn of undo.reverse()) {
    try {
      await fn();
    } catch {
      /* best effort: the original error is what the user needs to see */
    }
  }
}

export class VolumeService {
  private readonly volumes = new Map<string, OpenVolume>();
  /** Names being opened or closed right now, so two requests for one name never interleave. */
  private readonly busy = new Set<string>();
  private pool: (KeyPool & { destroy(): Promise<void> }) | null = null;
  private pkcs11: Pkcs11Provider | null = null;
  private kmip: KmipKekProvider | null = null;
  private readonly audit: AuditSink;
  /** The KEK check loop: self-rescheduling, each pass bounded (see Periodic). */
  private readonly keyChecks: Periodic;
  /** Calls of the KEK check still running (a hung provider or header read is not started again). */
  private readonly checkCalls = new SingleFlight<unknown>();
  /** Volumes whose token is being re-wrapped now (never two re-wraps of one header at once). */
  private readonly rewrapping = new Set<OpenVolume>();
  /** Volumes whose key server is unreachable, in their grace period. */
  private readonly grace: UnreachableGrace<OpenVolume>;

  constructor(
    private readonly paths: RuntimePaths,
    private readonly log: Logger,
    private readonly opts: VolumeServiceOptions = {},
  ) {
    this.audit = opts.audit ?? ((): void => undefined);
    this.pool = opts.pool ?? null;
    this.grace = new UnreachableGrace({
      graceMs: opts.keyUnreachableGraceMs ?? DEFAULT_UNREACHABLE_GRACE_MS,
      log: this.log,
      ...(opts.graceClock === undefined ? {} : { now: opts.graceClock }),
    });
    this.keyChecks = new Periodic(() => this.checkKeys(), {
      intervalMs: this.keyCheckIntervalMs,
      // a pass waits for header reads and providers (each bounded), then a lock or re-wrap
      passTimeoutMs: 3 * this.keyCheckTimeoutMs,
      onError: (err) =>
        this.log.error(
          { event: 'key-check-failed', err: String(err) },
          'KEK check pass failed; next pass scheduled',
        ),
    });
  }

  get keyCheckTimeoutMs(): number {
    return this.opts.keyCheckTimeoutMs ?? DEFAULT_KEY_CHECK_TIMEOUT_MS;
  }

  /** KEK check passes finished so far (tests and diagnostics: proves the check keeps running). */
  get keyCheckPasses(): number {
    return this.keyChecks.passes;
  }

  /** How long volumes stay open while their key server cannot be reached. */
  get keyUnreachableGraceMs(): number {
    return this.grace.graceMs;
  }

  get keyCheckIntervalMs(): number {
    return this.opts.keyCheckIntervalMs ?? DEFAULT_KEY_CHECK_INTERVAL_MS;
  }

  /**
   * Starts the periodic KEK check of every open volume: each pass is scheduled when the last one
   * ends (or is abandoned after its bound), so no pass, whatever it does, can stop the checks.
   */
  startKeyChecks(): void {
    this.keyChecks.start();
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
    return withTimeout(this.checkCalls.run(key, fn) as Promise<T>, this.keyCheckTimeoutMs, what);
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
    this.audit({
      event: 'lock',
      name: v.name,
      volume: v.image,
      uuid: v.uuid,
      slot: v.keyslot,
      ...(v.binding ? { provider: redactUri(v.binding.kek), kekVersion: v.binding.version } : {}),
      reason,
    });
    this.log.error({ event: 'locked', volume: v.name, reason }, 'volume locked, keys wiped');
  }

  /** The configuration file's fuseBackend (volumes opened from now on; a daemon option wins). */
  private configFuseBackend: FuseBackend | undefined;

  /** The FUSE backend new volumes are served with. */
  get fuseBackend(): FuseBackend {
    return this.opts.fuse?.backend ?? this.configFuseBackend ?? DEFAULT_FUSE_BACKEND;
  }

  /** Volumes from the configuration file, with why the last open failed (null: served). */
  private readonly configured = new Map<string, { spec: VolumeConfig; error: string | null }>();

  /**
   * Makes the open volumes match the configuration: closes configured volumes that were removed or
   * changed, opens new ones, leaves the others untouched. A volume that fails does not stop the rest.
   */
  async applyConfig(cfg: Config): Promise<{ opened: string[]; failed: string[]; closed: string[] }> {
    this.configFuseBackend = cfg.fuseBackend;
    const wanted = new Map(cfg.volumes.map((v) => [v.name, v]));
    const r = { opened: [] as string[], failed: [] as string[], closed: [] as string[] };
    for (const [name, c] of [...this.configured]) {
      const w = wanted.get(name);
      if (w && JSON.stringify(w) === JSON.stringify(c.spec) && c.error === null) continue;
      this.configured.delete(name);
      if (this.volumes.has(name)) {
        try {
          await this.close(name);
          r.closed.push(name);
        } catch (err) {
          this.log.error(
            { event: 'close-failed', volume: name, err: String(err) },
            'could not close a removed volume',
          );
        }
      }
    }
    for (const spec of cfg.volumes) {
      if (this.configured.has(spec.name)) continue;
      try {
        await this.openConfigured(spec);
        this.configured.set(spec.name, { spec, error: null });
        r.opened.push(spec.name);
      } catch (err) {
        const why = isAtrestError(err) ? err.oneLine() : String(err);
        this.configured.set(spec.name, { spec, error: why });
        r.failed.push(spec.name);
        this.log.error(
          { event: 'open-failed', volume: spec.name, image: spec.image, reason: why },
          'configured volume failed',
        );
      }
    }
    return r;
  }

  private async openConfigured(spec: VolumeConfig): Promise<void> {
    const req: OpenRequest = {
      op: 'open',
      image: spec.image,
      name: spec.name,
      readOnly: spec.readOnly,
      loop: spec.loop,
      encrypt: spec.encrypt,
      ...(spec.header === undefined ? {} : { header: spec.header }),
      ...(spec.key.type === 'kek' ? { kek: spec.key.uri } : {}),
      ...(spec.key.type === 'keyFile' ? { keyFile: spec.key.path } : {}),
    };
    await this.open(req);
    const v = this.volumes.get(spec.name);
    if (!spec.mount || !v || v.loopDevice === null) return;
    try {
      await mkdir(spec.mount.path, { recursive: true });
      const args = ['-t', spec.mount.fstype];
      const opts = [spec.readOnly ? 'ro' : '', spec.mount.options ?? ''].filter(Boolean).join(',');
      if (opts) args.push('-o', opts);
      const r = await spawnHelper('mount', [...args, v.loopDevice, spec.mount.path], {
        timeoutMs: 60_000,
        hostMounts: true,
      });
      if (r.code !== 0) {
        throw new AtrestError(
          'IO',
          `could not mount ${v.loopDevice} on ${spec.mount.path}: ${r.stderr.trim()}`,
          {
            hint: 'check the filesystem type, or make one first (mkfs) on the loop device',
          },
        );
      }
      v.mountPoint = spec.mount.path;
    } catch (err) {
      await this.close(spec.name).catch(() => undefined);
      throw err;
    }
  }

  /** Configured volumes that are not open (their open failed), for status. */
  private failedConfigured(): VolumeStatus[] {
    const out: VolumeStatus[] = [];
    for (const [name, c] of this.configured) {
      if (this.volumes.has(name) || c.error === null) continue;
      out.push({
        name,
        state: 'failed',
        error: c.error,
        diskPath: '',
        image: c.spec.image,
        header: c.spec.header ?? c.spec.image,
        uuid: '',
        cipher: 'aes-xts-plain64',
        sectorSize: 0,
        size: 0,
        keyslot: -1,
        readOnly: c.spec.readOnly,
        loopDevice: null,
        mountPoint: null,
        configured: true,
        bytesRead: 0,
        bytesWritten: 0,
        openedAt: '',
        encryption: {
          enabled: true,
          cipher: 'aes-xts-plain64',
          keySource:
            c.spec.key.type === 'platform'
              ? 'platform'
              : c.spec.key.type === 'kek'
                ? 'customer'
                : 'passphrase',
          kek: null,
          kekVersion: null,
          keyslot: -1,
          locked: false,
        },
      });
    }
    return out;
  }

  /** Runs a volume's conversion in the background; at the end the header is in its final place. */
  private runConversion(v: OpenVolume): void {
    const c = v.conversion;
    if (c === null) return;
    c.done = c.converter.run().then(
      async (finished) => {
        if (!finished) return;
        if (c.converter.plan.sidecar) v.header = v.image;
        // a reencryption is over: the old key goes from the workers too
        const old = c.oldKey;
        c.oldKey = null;
        await v.keys.drop(old);
        this.log.info(
          { event: 'convert-done', volume: v.name, mode: c.converter.plan.mode },
          'conversion finished',
        );
      },
      (err: unknown) => {
        this.log.error(
          {
            event: 'convert-failed',
            volume: v.name,
            code: (err as { code?: unknown }).code,
            err: String(err),
          },
          'conversion failed; the volume stays served, and the next open resumes it',
        );
      },
    );
  }

  /**
   * Re-encrypts an open volume under a new volume key, online: the header switches to the new key
   * (keyslots by the same methods), then the volume serves converted data with the new key and the
   * rest with the old one while the conversion runs. Returns new recovery passphrases to print once.
   */
  async reencrypt(
    name: string,
    keyFiles: string[],
    maxRate?: number,
    passphrases: readonly Buffer[] = [],
  ): Promise<{ recovery: Buffer[] }> {
    const v = this.volumes.get(name);
    if (!v) throw notOpen(name);
    if (v.plain) throw new AtrestError('USAGE', `volume ${name} is a benchmark volume`);
    if (v.locked !== null) throw new AtrestError('LOCKED', `volume ${name} is locked (${v.locked.reason})`);
    if (v.readOnly) throw new AtrestError('READ_ONLY', `volume ${name} is open read-only`);
    if (v.conversion !== null && v.conversion.converter.progress().state !== 'done') {
      throw new AtrestError('REENCRYPT_IN_PROGRESS', `volume ${name} is already being converted`, {
        hint: 'see `atrest status`',
      });
    }
    if (this.busy.has(name))
      throw new AtrestError('NAME_IN_USE', `volume ${name} is busy`, { hint: 'try again' });
    this.busy.add(name);
    const files: Buffer[] = [];
    let recoveryKeys: Buffer[] = []; // wiped here unless handed to the caller
    try {
      for (const p of passphrases) files.push(Buffer.from(p));
      for (const f of keyFiles) files.push(await readKeyFile(f));
      const km =
        v.binding?.km ??
        new KeyManager({
          keyStoreDir: this.opts.keyStore ?? this.paths.keyStore,
          providersFile: this.paths.providers,
          audit: (e) => this.audit({ ...e, name }),
          fips: this.opts.fips === true,
          pkcs11: this.getPkcs11(),
          kmip: this.getKmip(),
        });
      const header = v.header === v.image ? {} : { header: v.header };
      const keyring = new ConversionKeyringAdapter(km);
      const { recovery } = await startReencrypt(v.image, { ...header, keys: { keyring, keyFiles: files } });
      recoveryKeys = recovery.map((r) => r.passphrase);
      const conv = await openConversion(v.image, {
        ...header,
        start: false,
        keys: { keyring, keyFiles: files },
      });
      let newKey: PoolKey | null = null;
      let oldKey: PoolKey | null = null;
      let switched = false;
      let converter: Converter;
      try {
        if (conv === null || conv.oldKey === null)
          throw new AtrestError('INTERNAL', 'reencryption did not start');
        // both keys belong to the volume from here: a lock or close now wipes them too
        newKey = await v.keys.add(conv.unlocked.volumeKey);
        oldKey = await v.keys.add(conv.oldKey);
        const { plan } = conv;
        converter = new Converter({
          image: v.image,
          header: conv.header,
          plan,
          target: newKey,
          source: oldKey,
          maxRate: maxRate ?? DEFAULT_ONLINE_RATE,
        });
        const front = await converter.prepare();
        this.failPoint('reencrypt-prepared');
        await v.volume.beginConversion(newKey.keyRef(), {
          front,
          sourceOffset: plan.sourceOffset,
          sourceKey: oldKey.keyRef(),
          sourceIvTweak: plan.sourceIvTweak,
        });
        switched = true;
      } finally {
        conv?.unlocked.volumeKey.fill(0);
        conv?.oldKey?.fill(0);
        // not switched: the volume goes on with its current key; the next open resumes the reencryption
        if (!switched) await Promise.all([v.keys.drop(newKey), v.keys.drop(oldKey)]);
      }
      const previous = v.key;
      v.key = newKey;
      await v.keys.drop(previous); // the volume's own copy of the old key; the converter's goes at the end
      converter.attach(v.volume);
      v.conversion = { converter, done: null, oldKey };
      this.runConversion(v);
      this.log.info({ event: 'reencrypt-start', volume: name }, 're-encrypting under a new volume key');
      // the caller sends them as raw bytes and wipes them
      const out = recoveryKeys;
      recoveryKeys = [];
      return { recovery: out };
    } finally {
      for (const r of recoveryKeys) r.fill(0);
      for (const f of files) f.fill(0);
      this.busy.delete(name);
    }
  }

  /** Pauses or resumes the conversion of an open volume. */
  controlConversion(name: string, action: 'pause' | 'resume'): void {
    const v = this.volumes.get(name);
    if (!v) throw notOpen(name);
    const c = v.conversion?.converter;
    if (c === undefined || c.progress().state === 'done') {
      throw new AtrestError('USAGE', `volume ${name} is not being converted`, {
        hint: 'see `atrest status`',
      });
    }
    if (action === 'pause') c.pause();
    else c.resume();
    this.log.info({ event: `convert-${action}`, volume: name }, `conversion ${action}d`);
  }

  private getPkcs11(): Pkcs11Provider {
    this.pkcs11 ??= new Pkcs11Provider();
    return this.pkcs11;
  }

  /** One KMIP provider (its server connections) for every volume, like the PKCS#11 sessions. */
  private getKmip(): KmipKekProvider {
    this.kmip ??= this.opts.kmip ?? newKmipProvider();
    return this.kmip;
  }

  get size(): number {
    return this.volumes.size;
  }

  private getPool(): KeyPool {
    this.pool ??= new CryptoPool(poolOptionsFromEnv());
    return this.pool;
  }

  private failPoint(name: string): void {
    this.opts.failPoint?.(name);
  }

  async open(req: OpenRequest): Promise<VolumeStatus> {
    const { name } = req;
    if (!VOLUME_NAME_RE.test(name)) {
      throw new AtrestError('USAGE', `volume name ${JSON.stringify(name)} is not valid`, {
        hint: 'use 1-64 letters, digits, dots, dashes or underscores, starting with a letter or digit',
      });
    }
    if (this.volumes.has(name) || this.busy.has(name)) {
      throw new AtrestError('NAME_IN_USE', `a volume named ${name} is already open`, {
        hint: `close it with \`atrest close ${name}\` or choose another name`,
      });
    }
    this.busy.add(name);
    try {
      const v = await this.doOpen(req);
      this.volumes.set(name, v);
      if (v.conversion !== null) this.runConversion(v);
      this.log.info(
        {
          event: 'open',
          volume: name,
          image: v.image,
          keyslot: v.keyslot,
          loop: v.loopDevice,
          readOnly: v.readOnly,
        },
        'volume opened',
      );
      return this.statusOf(v);
    } finally {
      this.busy.delete(name);
    }
  }

  private async doOpen(req: OpenRequest): Promise<OpenVolume> {
    let image: string;
    try {
      image = await realpath(req.image);
    } catch (err) {
      throw fromSystemError(err, req.image, 'image');
    }
    const header =
      req.header === undefined
        ? image
        : await realpath(req.header).catch((err: unknown) => {
            throw fromSystemError(err, req.header ?? '', 'header file');
          });
    const st = await stat(image).catch((err: unknown) => {
      throw fromSystemError(err, image, 'image');
    });
    if (!st.isFile()) {
      throw new AtrestError('USAGE', `image ${image} is not a regular file`, { path: image });
    }
    const undo: Array<() => Promise<unknown>> = [];
    try {
      const lock = await acquireImageLock(image, this.paths.lockDir);
      undo.push(() => lock.release());
      const u = req.benchPlain
        ? this.benchPlainLayout(image, st.size)
        : await this.unlock(req, image, header, st.size);
      undo.push(() => u.keys.wipeAll());
      const volume = await Volume.open({
        imagePath: image,
        dataOffset: u.dataOffset,
        dataSize: u.size,
        sectorSize: u.sectorSize,
        ivTweak: u.ivTweak,
        key: u.key?.keyRef() ?? null,
        readOnly: req.readOnly,
        ...(u.conversion === null ? {} : { conversion: u.conversion.split }),
      });
      u.conversion?.converter.attach(volume);
      undo.push(() => volume.close());
      const diskPath = join(this.paths.runDir, req.name);
      const fuse = this.opts.fuse;
      const disk = await (this.opts.serveDisk ?? serveDisk)({
        mountPath: diskPath,
        disk: volume,
        backend: this.fuseBackend,
        ...(fuse === undefined ? {} : { workers: fuse.workers }),
        ...(fuse?.maxMinor === undefined ? {} : { maxMinor: fuse.maxMinor }),
      });
      undo.push(() => disk.close());
      let loopDevice: string | null = null;
      if (req.loop) {
        loopDevice = await attachLoop(diskPath, u.sectorSize, req.readOnly);
        const dev = loopDevice;
        undo.push(() => detachLoop(dev));
      }
      return {
        name: req.name,
        diskPath,
        image,
        header: u.header,
        uuid: u.uuid,
        sectorSize: u.sectorSize,
        size: u.size,
        keyslot: u.keyslot,
        readOnly: req.readOnly,
        loopDevice,
        openedAt: new Date(),
        volume,
        keys: u.keys,
        key: u.key,
        disk,
        lock,
        binding: u.binding,
        plain: req.benchPlain === true,
        locked: null,
        mountPoint: null,
        conversion:
          u.conversion === null
            ? null
            : { converter: u.conversion.converter, done: null, oldKey: u.conversion.oldKey },
      };
    } catch (err) {
      await unwind(undo);
      throw err;
    }
  }

  /**
   * Reads the LUKS2 header, unlocks the volume key (key file, else the volume's platform/customer key
   * token) and hands it to the crypto pool (once).
   */
  private async unlock(req: OpenRequest, image: string, header: string, imageSize: number): Promise<Layout> {
    let passphrase: Buffer | null = null;
    let volumeKey: Buffer | null = null;
    let oldKeyBytes: Buffer | null = null;
    // every key handed to the pool from here is wiped if a later step of unlocking fails
    const keys = new VolumeKeys(() => this.getPool());
    let ok = false;
    if (req.fips === true && this.opts.fips !== true) requireFips();
    const km = new KeyManager({
      keyStoreDir: req.keyStore ?? this.opts.keyStore ?? this.paths.keyStore,
      providersFile: req.providers ?? this.paths.providers,
      audit: (e) => this.audit({ ...e, name: req.name }),
      fips: req.fips === true || this.opts.fips === true,
      pkcs11: this.getPkcs11(),
      kmip: this.getKmip(),
      ...(req.kek === undefined ? {} : { kekOverride: req.kek }),
    });
    try {
      if (req.passphrase !== undefined) passphrase = Buffer.from(req.passphrase);
      else if (req.keyFile !== undefined) passphrase = await readKeyFile(req.keyFile);
      // an in-place conversion to resume, or (only when asked) a plaintext image to encrypt
      const conv = await openConversion(image, {
        ...(req.header === undefined ? {} : { header }),
        // open --encrypt / "encrypt": true; a detached header is only made by atrest encrypt
        start: req.header === undefined && req.encrypt === true,
        refuseRandom: true,
        keys: {
          keyring: new ConversionKeyringAdapter(km),
          ...(passphrase === null ? {} : { passphrase }),
          ...(req.kek === undefined ? {} : { kek: req.kek }),
        },
      });
      if (conv !== null) {
        volumeKey = conv.unlocked.volumeKey;
        oldKeyBytes = conv.oldKey;
        const key = await keys.add(volumeKey);
        this.failPoint('open-key-added');
        const oldKey = oldKeyBytes === null ? null : await keys.add(oldKeyBytes);
        const { plan } = conv;
        const source: SectorCipher = oldKey ?? new PlainCipher();
        const converter = new Converter({
          image,
          header: conv.header,
          plan,
          target: key,
          source,
          maxRate: req.maxRate ?? DEFAULT_ONLINE_RATE,
        });
        const front = await converter.prepare();
        this.failPoint('open-prepared');
        this.log.info(
          { event: conv.started ? 'convert-start' : 'convert-resume', image, mode: plan.mode, front },
          conv.started ? 'encrypting a plaintext image in place' : 'resuming an in-place conversion',
        );
        ok = true;
        return {
          uuid: conv.meta.uuid,
          keyslot: conv.unlocked.keyslot,
          dataOffset: plan.targetOffset,
          size: plan.size,
          sectorSize: plan.sectorSize,
          ivTweak: 0,
          keys,
          key,
          binding: liveBinding(conv.unlocked, km),
          header: conv.header,
          conversion: {
            converter,
            oldKey,
            split: {
              front,
              sourceOffset: plan.sourceOffset,
              sourceKey: oldKey?.keyRef() ?? null,
              sourceIvTweak: plan.sourceIvTweak,
            },
          },
        };
      }
      const meta = await readLuks2(header, { imagePath: image }).catch((err: unknown) => {
        throw refuseNotLuks2(err, image, req);
      });
      for (const w of meta.warnings) this.log.warn({ event: 'header', image, header }, w);
      const size = resolvedDataSize(meta, imageSize);
      const unlocked = await km
        .unlock(meta, passphrase === null ? {} : { passphrase })
        .catch((err: unknown) => {
          this.log.warn(
            { event: 'unlock-failed', image, code: (err as { code?: unknown }).code },
            'unlock failed',
          );
          throw err;
        });
      volumeKey = unlocked.volumeKey;
      const key = await keys.add(volumeKey);
      this.failPoint('open-key-added');
      ok = true;
      return {
        uuid: meta.uuid,
        keyslot: unlocked.keyslot,
        dataOffset: meta.dataOffset,
        size,
        sectorSize: meta.sectorSize,
        ivTweak: meta.ivTweak,
        keys,
        key,
        binding: liveBinding(unlocked, km),
        header,
        conversion: null,
      };
    } finally {
      passphrase?.fill(0);
      volumeKey?.fill(0);
      oldKeyBytes?.fill(0);
      if (!ok) await keys.wipeAll();
    }
  }

  /**
   * Bench only: serves a raw image without encryption so `npm run bench` can compare the same daemon
   * with and without crypto. Refused unless this daemon was started with ATREST_BENCH_PLAIN=1.
   */
  private benchPlainLayout(image: string, imageSize: number): Layout {
    if (!envFlag('ATREST_BENCH_PLAIN')) {
      throw new AtrestError('USAGE', 'unencrypted serving exists only for benchmarks', {
        hint: 'atrest always encrypts; open a LUKS2 volume',
      });
    }
    this.log.warn({ event: 'bench-plain', image }, 'serving an UNENCRYPTED image for a benchmark');
    const size = imageSize - (imageSize % 4096);
    return {
      uuid: '',
      keyslot: -1,
      dataOffset: 0,
      size,
      sectorSize: 4096,
      ivTweak: 0,
      keys: new VolumeKeys(() => this.getPool()),
      key: null,
      binding: null,
      header: image,
      conversion: null,
    };
  }

  async close(name: string): Promise<void> {
    const v = this.volumes.get(name);
    if (!v) {
      throw notOpen(name);
    }
    if (this.busy.has(name)) {
      throw new AtrestError('NAME_IN_USE', `volume ${name} is being opened or closed`, { hint: 'try again' });
    }
    this.busy.add(name);
    try {
      if (v.conversion !== null) {
        v.conversion.converter.stop();
        await v.conversion.done;
      }
      if (v.mountPoint !== null) {
        await unmount(v.mountPoint);
        this.log.info({ event: 'unmount', volume: name, path: v.mountPoint }, 'filesystem unmounted');
        v.mountPoint = null;
      }
      if (v.loopDevice) {
        const mountedAt = await loopMountPoint(v.loopDevice);
        if (mountedAt) {
          throw new AtrestError(
            'IMAGE_BUSY',
            `${v.loopDevice} of volume ${name} is mounted on ${mountedAt}`,
            {
              hint: `unmount it first (umount ${mountedAt})`,
            },
          );
        }
        await detachLoop(v.loopDevice);
        v.loopDevice = null;
      }
      if (v.locked === null) await v.volume.fsync(false);
      try {
        await v.disk.close();
        // writes acknowledged while the disk file was being unmounted reach the image too
        if (v.locked === null) await v.volume.fsync(false).catch(() => undefined);
        await v.volume.close();
      } finally {
        // no longer served: its keys go even if closing failed half way
        await v.keys.wipeAll();
      }
      await v.lock.release();
      this.volumes.delete(name);
      this.log.info({ event: 'close', volume: name }, 'volume closed, keys wiped');
    } finally {
      this.busy.delete(name);
    }
  }

  status(name?: string): VolumeStatus[] {
    if (name !== undefined) {
      const v = this.volumes.get(name);
      const failed = this.failedConfigured().find((f) => f.name === name);
      if (!v && failed) return [failed];
      if (!v) throw notOpen(name);
      return [this.statusOf(v)];
    }
    return [...[...this.volumes.values()].map((v) => this.statusOf(v)), ...this.failedConfigured()].sort(
      (a, b) => a.name.localeCompare(b.name),
    );
  }

  private statusOf(v: OpenVolume): VolumeStatus {
    const c = v.volume.counters;
    const conv = v.conversion?.converter.progress();
    const state =
      v.locked !== null
        ? 'locked'
        : conv !== undefined && conv.state !== 'done'
          ? `${conv.mode === 'encrypt' ? 'encrypting' : 're-encrypting'} ${conv.percent}%${conv.state === 'paused' ? ' (paused)' : conv.state === 'failed' ? ' (failed)' : ''}`
          : 'served';
    return {
      name: v.name,
      state,
      mountPoint: v.mountPoint,
      configured: this.configured.has(v.name),
      diskPath: v.diskPath,
      image: v.image,
      header: v.header,
      uuid: v.uuid,
      cipher: 'aes-xts-plain64',
      sectorSize: v.sectorSize,
      size: v.size,
      keyslot: v.keyslot,
      readOnly: v.readOnly,
      loopDevice: v.loopDevice,
      fuseBackend: v.disk.backend,
      bytesRead: c.bytesRead,
      bytesWritten: c.bytesWritten,
      openedAt: v.openedAt.toISOString(),
      encryption: this.encryptionOf(v),
      ...(v.conversion === null ? {} : { conversion: v.conversion.converter.progress() }),
    };
  }

  private encryptionOf(v: OpenVolume): EncryptionStatus {
    const b = v.binding;
    const e: EncryptionStatus = {
      enabled: !v.plain,
      cipher: v.plain ? 'none (benchmark only)' : 'aes-xts-plain64',
      keySource: keySourceOf(b),
      kek: b === null ? null : redactUri(b.kek),
      kekVersion: b === null ? null : b.version,
      keyslot: b === null ? v.keyslot : b.keyslot,
      locked: v.locked !== null,
    };
    const outage = v.locked === null ? this.grace.outage(v) : undefined;
    if (outage !== undefined) {
      e.keyServerUnreachable = {
        since: new Date(outage.since).toISOString(),
        locksAt: new Date(outage.locksAt).toISOString(),
        detail: outage.detail,
      };
    }
    if (v.locked !== null) {
      e.lockedReason = v.locked.reason;
      e.lockedAt = v.locked.at.toISOString();
    }
    return e;
  }

  /** Closes every volume (best effort, each independently), then stops the worker pool. */
  async closeAll(): Promise<void> {
    await this.keyChecks.stop();
    for (const name of [...this.volumes.keys()]) {
      try {
        await this.close(name);
      } catch (err) {
        this.log.error({ event: 'close-failed', volume: name, err: String(err) }, 'could not close volume');
      }
    }
    if (this.pool) {
      await this.pool.destroy();
      this.pool = null;
    }
    this.pkcs11?.close();
    this.pkcs11 = null;
    if (this.opts.kmip === undefined) await this.kmip?.close();
    this.kmip = null;
  }
}

/** Crypto pool tuning for operators and benchmarks: ATREST_CRYPTO_WORKERS, ATREST_CRYPTO_INLINE_MAX. */
function poolOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): CryptoPoolOptions {
  const opts: CryptoPoolOptions = {};
  const workers = envSet('ATREST_CRYPTO_WORKERS', env);
  if (workers !== undefined) opts.workers = Number(workers);
  const inlineMax = envSet('ATREST_CRYPTO_INLINE_MAX', env);
  if (inlineMax !== undefined) opts.inlineMaxBytes = Number(inlineMax);
  return opts;
}

async function attachLoop(file: string, sectorSize: number, readOnly: boolean): Promise<string> {
  const args = ['--find', '--show', '--sector-size', String(sectorSize)];
  if (readOnly) args.push('--read-only');
  args.push(file);
  const r = await spawnHelper('losetup', args, { timeoutMs: 30_000 });
  const dev = r.stdout.trim();
  if (r.code !== 0 || !dev.startsWith('/dev/loop')) {
    throw new AtrestError(
      'IO',
      `could not attach a loop device to ${file}: ${r.stderr.trim() || 'losetup failed'}`,
      {
        hint: 'check that the loop module is loaded (modprobe loop) and free loop devices exist',
      },
    );
  }
  return dev;
}

async function detachLoop(dev: string): Promise<void> {
  const r = await spawnHelper('losetup', ['-d', dev], { timeoutMs: 30_000 });
  if (r.code !== 0) {
    throw new AtrestError('IMAGE_BUSY', `could not detach ${dev}: ${r.stderr.trim()}`, {
      hint: 'stop what uses the loop device and close again',
    });
  }
}

/** Where a block device is mounted (null when it is not). */
async function loopMountPoint(dev: string): Promise<string | null> {
  return (await mounts()).find((m) => m.source === dev)?.mountPoint ?? null;
}

/** What the KEK checker keeps of the binding a volume was unlocked through (null: a passphrase). */
function liveBinding(unlocked: Unlocked, km: KeyManager): LiveBinding | null {
  const b = unlocked.binding;
  if (b === null || unlocked.ref === null || unlocked.provider === null) return null;
  return {
    type: b.type,
    tokenId: b.tokenId,
    keyslot: b.keyslot,
    kek: b.kek,
    keyId: b.keyId,
    version: b.version,
    ref: unlocked.ref,
    provider: unlocked.provider,
    km,
  };
}

/** Unmounts a filesystem the daemon mounted (lazy as a last resort, so stop never hangs). */
async function unmount(path: string): Promise<void> {
  const r = await spawnHelper('umount', [path], { timeoutMs: 60_000, hostMounts: true });
  if (r.code === 0) return;
  const lazy = await spawnHelper('umount', ['-l', path], { timeoutMs: 30_000, hostMounts: true });
  if (lazy.code !== 0) {
    throw new AtrestError('IMAGE_BUSY', `could not unmount ${path}: ${r.stderr.trim()}`, {
      hint: 'stop what uses it and try again',
    });
  }
}
