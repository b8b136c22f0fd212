// Native-test helpers for the FUSE layer: a Volume served over a real mount in a temp dir, shell runs, cleanup.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { serveDisk, spawnHelper, type FuseDisk, type SpawnHelperResult } from '../../src/fuse/index.js';
import { LocalKeyring } from '../../src/crypto/index.js';
import { Volume } from '../../src/volume/index.js';

export const CLEANUP = resolve(import.meta.dirname, '..', '..', 'scripts', 'cleanup');

/** Runs a bash command line (through spawnHelper: no /dev/fuse fd leaks), with a timeout. */
export function sh(cmd: string, timeoutMs = 60_000): Promise<SpawnHelperResult> {
  return spawnHelper('/bin/bash', ['-c', cmd], { timeoutMs });
}

/** Like sh but throws with the output when the command fails. */
export async function shOk(cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await sh(cmd, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** scripts/cleanup --all over `dir` (everything atrest-ish in it goes). */
export async function runCleanup(dir: string): Promise<void> {
  await spawnHelper(CLEANUP, ['--all', dir], { timeoutMs: 60_000 });
}

export interface ServedDisk {
  dir: string;
  image: string;
  diskPath: string;
  key: Buffer;
  dataOffset: number;
  ivTweak: number;
  volume: Volume;
  disk: FuseDisk;
  /** fsync calls that reached the volume (the kernel backend's workers count theirs as data syncs). */
  readonly fsyncs: { data: number; full: number };
  /** Closes disk and volume (idempotent). */
  close(): Promise<void>;
}

export function xtsKey(): Buffer {
  for (;;) {
    const k = randomBytes(64);
    if (!k.subarray(0, 32).equals(k.subarray(32))) return k;
  }
}

/** A fresh image in `dir`, opened as a Volume (XTS under a key of its own unless plain) and served on dir/disk-N. */
export async function serveTestDisk(
  dir: string,
  opts: {
    size?: number;
    sectorSize?: number;
    plain?: boolean;
    readOnly?: boolean;
    directIo?: boolean;
    /** Default kernel (the daemon's default); libfuse only when the fallback is built. */
    backend?: 'kernel' | 'libfuse';
  } = {},
): Promise<ServedDisk> {
  const size = opts.size ?? 64 * 1024 * 1024;
  const dataOffset = 16 * 1024 * 1024;
  const ivTweak = 0;
  const id = randomBytes(3).toString('hex');
  const image = join(dir, `image-${id}`);
  const diskPath = join(dir, `disk-${id}`);
  await writeFile(image, '');
  await shOk(`truncate -s ${dataOffset + size} ${image}`);
  const key = xtsKey();
  // the volume's key lives in a keyring of the test's own (the daemon uses its crypto pool's)
  const keyring = new LocalKeyring();
  const keyRef = opts.plain ? null : keyring.add(key);
  const volume = await Volume.open({
    imagePath: image,
    dataOffset,
    dataSize: size,
    sectorSize: opts.sectorSize ?? 4096,
    ivTweak,
    key: keyRef,
    readOnly: opts.readOnly ?? false,
  });
  const fsyncs = { data: 0, full: 0 };
  let disk: FuseDisk;
  try {
    disk = await serveDisk({
      mountPath: diskPath,
      directIo: opts.directIo ?? true,
      backend: opts.backend ?? 'kernel',
      disk: {
        size: volume.size,
        readOnly: volume.readOnly,
        descriptor: () => volume.descriptor(),
        read: (p, l) => volume.read(p, l),
        write: (p, d) => volume.write(p, d),
        fsync: (datasync) => {
          if (datasync) fsyncs.data++;
          else fsyncs.full++;
          return volume.fsync(datasync);
        },
      },
    });
  } catch (err) {
    await volume.close();
    if (keyRef !== null) keyring.wipe(keyRef);
    throw err;
  }
  let closing: Promise<void> | null = null;
  return {
    dir,
    image,
    diskPath,
    key,
    dataOffset,
    ivTweak,
    volume,
    disk,
    get fsyncs() {
      const served = (disk as { stats?: () => { syncs: number } }).stats?.().syncs ?? 0;
      return { data: fsyncs.data + served, full: fsyncs.full };
    },
    close: () =>
      (closing ??= (async () => {
        try {
          await disk.close();
        } finally {
          await volume.close();
          if (keyRef !== null) keyring.wipe(keyRef);
        }
      })()),
  };
}

export async function makeTempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'atrest-fuse-'));
}

export async function removeTempDir(dir: string): Promise<void> {
  await runCleanup(dir);
  await rm(dir, { recursive: true, force: true });
}
