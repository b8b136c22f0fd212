// The volume service: the set of open volumes by name and its entry points (open, close, status, reencrypt, config, KEK checks).
// Open and close stay here, step by step, because their order is the contract (hence ~400 lines): open takes the
// image lock, unlocks (unlock.ts), opens the Volume, serves its disk file, attaches a loop device, and unwinds in
// reverse on failure; close stops a conversion, unmounts, detaches, flushes, stops serving, wipes the keys, releases
// the lock. The KEK check (key-watch.ts), online conversion (online-conversion.ts), the configuration file
// (reconcile.ts), status (status.ts) and the shared pool and providers (resources.ts) live in their own files.
import { realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AtrestError, fromSystemError } from '../errors/index.js';
import type { AuditSink, KmipKekProvider } from '../keys/index.js';
import { acquireImageLock, Volume } from '../volume/index.js';
import { attachLoop, detachLoop, loopMountPoint, unmount } from '../fuse/blockdev.js';
import { serveDisk } from '../fuse/index.js';
import { DEFAULT_FUSE_BACKEND, type FuseBackend, type FuseSettings } from '../fuse/backend.js';
import type { Config } from './config.js';
import { DEFAULT_KEY_CHECK_INTERVAL_MS, DEFAULT_KEY_CHECK_TIMEOUT_MS, KeyWatch } from './key-watch.js';
import { notOpen } from './not-open.js';
import { controlConversion, reencrypt, reencryptable, runConversion } from './online-conversion.js';
import type { OpenVolume } from './open-volume.js';
import { VOLUME_NAME_RE, type RuntimePaths } from './paths.js';
import type { OpenRequest, VolumeStatus } from './protocol.js';
import { ConfigReconciler } from './reconcile.js';
import { SharedResources } from './resources.js';
import { statusOf } from './status.js';
import { DEFAULT_UNREACHABLE_GRACE_MS } from './unreachable-grace.js';
import { benchPlainLayout, unlock, type UnlockContext } from './unlock.js';
import type { KeyPool } from './volume-keys.js';

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
  private readonly audit: AuditSink;
  /** The crypto pool and key-provider sessions every volume shares. */
  private readonly resources: SharedResources;
  /** The periodic KEK check of every open volume (with the unreachable grace). */
  private readonly keyWatch: KeyWatch;
  /** The volumes of the configuration file. */
  private readonly config: ConfigReconciler;
  private readonly unlockContext: UnlockContext;

  constructor(
    private readonly paths: RuntimePaths,
    private readonly log: Logger,
    private readonly opts: VolumeServiceOptions = {},
  ) {
    this.audit = opts.audit ?? ((): void => undefined);
    this.resources = new SharedResources(paths, {
      audit: this.audit,
      fips: opts.fips,
      keyStore: opts.keyStore,
      kmip: opts.kmip,
      pool: opts.pool,
    });
    this.keyWatch = new KeyWatch(this.volumes, {
      log,
      audit: this.audit,
      intervalMs: this.keyCheckIntervalMs,
      timeoutMs: this.keyCheckTimeoutMs,
      graceMs: opts.keyUnreachableGraceMs ?? DEFAULT_UNREACHABLE_GRACE_MS,
      graceClock: opts.graceClock,
    });
    this.config = new ConfigReconciler(
      {
        open: (req) => this.open(req),
        close: (name) => this.close(name),
        opened: (name) => this.volumes.get(name),
      },
      log,
    );
    this.unlockContext = {
      log,
      fips: opts.fips === true,
      pool: () => this.resources.getPool(),
      keyManager: (name, o) => this.resources.keyManager(name, o),
      failPoint: (name) => this.failPoint(name),
    };
  }

  get keyCheckTimeoutMs(): number {
    return this.opts.keyCheckTimeoutMs ?? DEFAULT_KEY_CHECK_TIMEOUT_MS;
  }

  /** KEK check passes finished so far (tests and diagnostics: proves the check keeps running). */
  get keyCheckPasses(): number {
    return this.keyWatch.passes;
  }

  /** How long volumes stay open while their key server cannot be reached. */
  get keyUnreachableGraceMs(): number {
    return this.keyWatch.graceMs;
  }

  get keyCheckIntervalMs(): number {
    return this.opts.keyCheckIntervalMs ?? DEFAULT_KEY_CHECK_INTERVAL_MS;
  }

  /**
   * Starts the periodic KEK check of every open volume: each pass is scheduled when the last one
   * ends (or is abandoned after its bound), so no pass, whatever it does, can stop the checks.
   */
  startKeyChecks(): void {
    this.keyWatch.start();
  }

  /** One pass of the KEK check (key-watch.ts): locks volumes whose KEK is gone, re-wraps newer versions. */
  checkKeys(): Promise<void> {
    return this.keyWatch.checkKeys();
  }

  /** The FUSE backend new volumes are served with. */
  get fuseBackend(): FuseBackend {
    return this.opts.fuse?.backend ?? this.config.fuseBackend ?? DEFAULT_FUSE_BACKEND;
  }

  /** Makes the open volumes match the configuration file (reconcile.ts); one volume failing stops none. */
  applyConfig(cfg: Config): Promise<{ opened: string[]; failed: string[]; closed: string[] }> {
    return this.config.apply(cfg);
  }

  /**
   * Re-encrypts an open volume under a new volume key, online (online-conversion.ts). Returns new
   * recovery passphrases to print once.
   */
  async reencrypt(
    name: string,
    keyFiles: string[],
    maxRate?: number,
    passphrases: readonly Buffer[] = [],
  ): Promise<{ recovery: Buffer[] }> {
    const v = reencryptable(name, this.volumes.get(name));
    if (this.busy.has(name))
      throw new AtrestError('NAME_IN_USE', `volume ${name} is busy`, { hint: 'try again' });
    this.busy.add(name);
    try {
      return await reencrypt(v, {
        keyFiles,
        maxRate,
        passphrases,
        keyManager: () => this.resources.keyManager(name),
        failPoint: (at) => this.failPoint(at),
        log: this.log,
      });
    } finally {
      this.busy.delete(name);
    }
  }

  /** Pauses or resumes the conversion of an open volume. */
  controlConversion(name: string, action: 'pause' | 'resume'): void {
    controlConversion(name, this.volumes.get(name), action, this.log);
  }

  get size(): number {
    return this.volumes.size;
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
      if (v.conversion !== null) runConversion(v, this.log);
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
        ? benchPlainLayout(this.unlockContext, image, st.size)
        : await unlock(this.unlockContext, req, image, header, st.size);
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
      const failed = this.config.failed().find((f) => f.name === name);
      if (!v && failed) return [failed];
      if (!v) throw notOpen(name);
      return [this.statusOf(v)];
    }
    return [...[...this.volumes.values()].map((v) => this.statusOf(v)), ...this.config.failed()].sort(
      (a, b) => a.name.localeCompare(b.name),
    );
  }

  private statusOf(v: OpenVolume): VolumeStatus {
    return statusOf(v, { configured: this.config.has(v.name), outage: (x) => this.keyWatch.outage(x) });
  }

  /** Closes every volume (best effort, each independently), then stops the worker pool. */
  async closeAll(): Promise<void> {
    await this.keyWatch.stop();
    for (const name of [...this.volumes.keys()]) {
      try {
        await this.close(name);
      } catch (err) {
        this.log.error({ event: 'close-failed', volume: name, err: String(err) }, 'could not close volume');
      }
    }
    await this.resources.close();
  }
}
