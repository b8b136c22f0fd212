// Makes the open volumes match the configuration file (at start and on SIGHUP): opens, mounts and closes configured volumes, remembers why one failed.
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { isAtrestError } from '../errors/index.js';
import type { FuseBackend } from '../fuse/backend.js';
import { mountDevice } from '../fuse/blockdev.js';
import type { Config, VolumeConfig } from './config.js';
import type { OpenVolume } from './open-volume.js';
import type { OpenRequest, VolumeStatus } from './protocol.js';
import { failedStatus } from './status.js';

/** What reconciling needs of the volume service. */
export interface ReconcileTarget {
  open(req: OpenRequest): Promise<unknown>;
  close(name: string): Promise<void>;
  /** The open volume of that name, if any. */
  opened(name: string): OpenVolume | undefined;
}

export class ConfigReconciler {
  /** Volumes from the configuration file, with why the last open failed (null: served). */
  private readonly configured = new Map<string, { spec: VolumeConfig; error: string | null }>();
  /** The configuration file's fuseBackend (volumes opened from now on; a daemon option wins). */
  fuseBackend: FuseBackend | undefined;

  constructor(
    private readonly target: ReconcileTarget,
    private readonly log: Logger,
  ) {}

  /** Whether `name` is a volume of the configuration file. */
  has(name: string): boolean {
    return this.configured.has(name);
  }

  /**
   * Makes the open volumes match the configuration: closes configured volumes that were removed or
   * changed, opens new ones, leaves the others untouched. A volume that fails does not stop the rest.
   */
  async apply(cfg: Config): Promise<{ opened: string[]; failed: string[]; closed: string[] }> {
    this.fuseBackend = cfg.fuseBackend;
    const wanted = new Map(cfg.volumes.map((v) => [v.name, v]));
    const r = { opened: [] as string[], failed: [] as string[], closed: [] as string[] };
    for (const [name, c] of [...this.configured]) {
      const w = wanted.get(name);
      if (w && JSON.stringify(w) === JSON.stringify(c.spec) && c.error === null) continue;
      this.configured.delete(name);
      if (this.target.opened(name) !== undefined) {
        try {
          await this.target.close(name);
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

  /** Opens one configured volume and mounts its loop device's filesystem when asked (closed again if that fails). */
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
    await this.target.open(req);
    const v = this.target.opened(spec.name);
    if (!spec.mount || !v || v.loopDevice === null) return;
    try {
      await mkdir(spec.mount.path, { recursive: true });
      await mountDevice(v.loopDevice, spec.mount.path, {
        fstype: spec.mount.fstype,
        options: spec.mount.options,
        readOnly: spec.readOnly,
      });
      v.mountPoint = spec.mount.path;
    } catch (err) {
      await this.target.close(spec.name).catch(() => undefined);
      throw err;
    }
  }

  /** Configured volumes that are not open (their open failed), for status. */
  failed(): VolumeStatus[] {
    const out: VolumeStatus[] = [];
    for (const [name, c] of this.configured) {
      if (this.target.opened(name) !== undefined || c.error === null) continue;
      out.push(failedStatus(name, c.spec, c.error));
    }
    return out;
  }
}
