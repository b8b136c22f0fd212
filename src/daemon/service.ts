// The set of open volumes: open (unlock, lock image, serve, loop), close (flush, detach, unmount, wipe), status.
import { realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CryptoPool } from '../crypto/index.js';
import type { CryptoPoolOptions } from '../crypto/index.js';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { readKeyFile } from '../keys/index.js';
import { readLuks2, resolvedDataSize, unlockVolumeKey } from '../luks2/index.js';
import { acquireImageLock, PlainCipher, Volume, type ImageLock, type SectorCipher } from '../volume/index.js';
import { mounts, serveDisk, spawnHelper, type FuseDisk } from '../fuse/index.js';
import { VOLUME_NAME_RE, type RuntimePaths } from './paths.js';
import type { OpenRequest, VolumeStatus } from './protocol.js';

/**
 * Each volume acknowledges writes once they are copied and locked, like a disk's write cache, and keeps
 * up to this much encrypting and writing in the background; fsync waits for all of it (see Volume).
 * libfuse2 hands the daemon one O_DIRECT request at a time per file, so this is where the pipelining
 * between FUSE, the crypto workers and the image comes from.
 */
const WRITE_BEHIND_BYTES = 2 * 1024 * 1024;
/** Sequential readers get this much read and decrypted ahead of them (see Volume.read). */
const READ_AHEAD_BYTES = 512 * 1024;

/** What opening needs from the key side: where the data is and how to en/decrypt it. */
interface Layout {
  uuid: string;
  keyslot: number;
  dataOffset: number;
  size: number;
  sectorSize: number;
  ivTweak: number;
  cipher: SectorCipher;
  key: { wipe(): Promise<void> };
}

const NO_KEY = { wipe: (): Promise<void> => Promise.resolve() };

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
  key: { wipe(): Promise<void> };
  disk: FuseDisk;
  lock: ImageLock;
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
  private pool: CryptoPool | null = null;

  constructor(
    private readonly paths: RuntimePaths,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.volumes.size;
  }

  private getPool(): CryptoPool {
    this.pool ??= new CryptoPool(poolOptionsFromEnv());
    return this.pool;
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
      undo.push(() => u.key.wipe());
      const volume = await Volume.open({
        imagePath: image,
        dataOffset: u.dataOffset,
        dataSize: u.size,
        sectorSize: u.sectorSize,
        ivTweak: u.ivTweak,
        cipher: u.cipher,
        readOnly: req.readOnly,
        writeBehindBytes: WRITE_BEHIND_BYTES,
        readAheadBytes: READ_AHEAD_BYTES,
      });
      undo.push(() => volume.close());
      const diskPath = join(this.paths.runDir, req.name);
      const disk = await serveDisk({ mountPath: diskPath, disk: volume });
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
        header,
        uuid: u.uuid,
        sectorSize: u.sectorSize,
        size: u.size,
        keyslot: u.keyslot,
        readOnly: req.readOnly,
        loopDevice,
        openedAt: new Date(),
        volume,
        key: u.key,
        disk,
        lock,
      };
    } catch (err) {
      await unwind(undo);
      throw err;
    }
  }

  /** Reads the LUKS2 header, unlocks the volume key and hands it to the crypto pool (once). */
  private async unlock(req: OpenRequest, image: string, header: string, imageSize: number): Promise<Layout> {
    let passphrase: Buffer | null = null;
    let volumeKey: Buffer | null = null;
    try {
      const meta = await readLuks2(header, { imagePath: image });
      for (const w of meta.warnings) this.log.warn({ event: 'header', image, header }, w);
      const size = resolvedDataSize(meta, imageSize);
      if (req.keyData !== undefined) passphrase = Buffer.from(req.keyData, 'base64');
      else if (req.keyFile !== undefined) passphrase = await readKeyFile(req.keyFile);
      else throw new AtrestError('USAGE', 'no key given', { hint: 'pass --key-file FILE' });
      const unlocked = await unlockVolumeKey(meta, passphrase).catch((err: unknown) => {
        this.log.warn(
          { event: 'unlock-failed', image, code: (err as { code?: unknown }).code },
          'unlock failed',
        );
        throw err;
      });
      volumeKey = unlocked.volumeKey;
      const key = await this.getPool().addKey(volumeKey);
      return {
        uuid: meta.uuid,
        keyslot: unlocked.keyslot,
        dataOffset: meta.dataOffset,
        size,
        sectorSize: meta.sectorSize,
        ivTweak: meta.ivTweak,
        cipher: key,
        key,
      };
    } finally {
      passphrase?.fill(0);
      volumeKey?.fill(0);
    }
  }

  /**
   * Bench only: serves a raw image without encryption so `npm run bench` can compare the same daemon
   * with and without crypto. Refused unless this daemon was started with ATREST_BENCH_PLAIN=1.
   */
  private benchPlainLayout(image: string, imageSize: number): Layout {
    if (process.env.ATREST_BENCH_PLAIN !== '1') {
      throw new AtrestError('USAGE', 'unencrypted serving exists only for benchmarks', {
        hint: 'atrest always encrypts; open a LUKS2 volume',
      });
    }
    this.log.warn({ event: 'bench-plain', image }, 'serving an UNENCRYPTED image for a benchmark');
    const size = imageSize - (imageSize % 4096);
    const cipher = new PlainCipher();
    return { uuid: '', keyslot: -1, dataOffset: 0, size, sectorSize: 4096, ivTweak: 0, cipher, key: NO_KEY };
  }

  async close(name: string): Promise<void> {
    const v = this.volumes.get(name);
    if (!v) {
      throw new AtrestError('NOT_OPEN', `no open volume is named ${name}`, { hint: 'see `atrest status`' });
    }
    if (this.busy.has(name)) {
      throw new AtrestError('NAME_IN_USE', `volume ${name} is being opened or closed`, { hint: 'try again' });
    }
    this.busy.add(name);
    try {
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
      await v.volume.fsync(false);
      await v.disk.close();
      await v.volume.close();
      await v.key.wipe();
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
      if (!v)
        throw new AtrestError('NOT_OPEN', `no open volume is named ${name}`, { hint: 'see `atrest status`' });
      return [this.statusOf(v)];
    }
    return [...this.volumes.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((v) => this.statusOf(v));
  }

  private statusOf(v: OpenVolume): VolumeStatus {
    const c = v.volume.counters;
    return {
      name: v.name,
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
      bytesRead: c.bytesRead,
      bytesWritten: c.bytesWritten,
      openedAt: v.openedAt.toISOString(),
    };
  }

  /** Closes every volume (best effort, each independently), then stops the worker pool. */
  async closeAll(): Promise<void> {
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
  }
}

/** Crypto pool tuning for operators and benchmarks: ATREST_CRYPTO_WORKERS, ATREST_CRYPTO_INLINE_MAX. */
function poolOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): CryptoPoolOptions {
  const opts: CryptoPoolOptions = {};
  if (env.ATREST_CRYPTO_WORKERS) opts.workers = Number(env.ATREST_CRYPTO_WORKERS);
  if (env.ATREST_CRYPTO_INLINE_MAX) opts.inlineMaxBytes = Number(env.ATREST_CRYPTO_INLINE_MAX);
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
