// The kernel backend's main-thread side: mounts /dev/fuse, runs N serving worker threads, drops keys in all of them, unmounts.
import { constants as fsConstants } from 'node:fs';
import { open as openFile, stat, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { AtrestError } from '../../errors/index.js';
import type { DiskIoDescriptor } from '../../volume/disk-io.js';
import { claimDiskFile, removeDiskFile } from '../disk-file.js';
import { abortConnection, fuseMountAt } from '../mounts.js';
import type { FuseDisk } from '../fuse-disk.js';
import { spawnHelper } from '../spawn.js';
import { FUSE_MAX_KNOWN_MINOR, FUSE_MIN_MINOR, OP_SLOTS, opName } from './abi.js';
import { ACK_GONE, Ctl, MAX_WORKERS, ackIndex, newControl } from './control.js';
import { closeFd, kernelMountOptions, mountFuseFd, openFuseDevice, waitForMountEntry } from './mount.js';
import type { WorkerInit, WorkerMessage } from './worker.js';
import { workerEntry, workerUrl } from './worker-url.js';

export interface ServeDiskKernelOptions {
  /** The disk file, e.g. /run/atrest/NAME; created empty (0600) if missing, removed again on close. */
  mountPath: string;
  disk: DiskIoDescriptor;
  /** Serving threads (default DEFAULT_FUSE_WORKERS: one per core, 2 to 8; the caller reads ATREST_FUSE_WORKERS). */
  workers?: number;
  /** Cap on the negotiated protocol minor, >= 31 (the caller reads ATREST_FUSE_MAX_MINOR). */
  maxMinor?: number;
  /** Let other users reach the file (mount option allow_other; mode 0600 still applies). */
  allowOther?: boolean;
  /** Give up on mounting after this long (default 10 s). */
  mountTimeoutMs?: number;
  /** Per unmount step (default 5 s). */
  unmountTimeoutMs?: number;
  /** Tests only: module exporting openDiskIo used by the workers instead of the volume layer's. */
  diskIoModule?: string;
}

/**
 * How close() took the mount down: umount (clean), lazy (busy: detached, threads then saw ENODEV),
 * abort (our connection aborted), terminate (threads stuck outside read(2)), stuck (some thread
 * did not end; its /dev/fuse descriptor stays open), none (nothing was mounted).
 */
export type ClosedBy = 'umount' | 'lazy' | 'abort' | 'terminate' | 'stuck' | 'none';

export interface KernelStats {
  /** Negotiated protocol minor (7.x). */
  minor: number;
  kernelMinor: number;
  /** INIT flags replied / offered. */
  flags: number;
  kernelFlags: number;
  inFlight: number;
  /** Most requests served at once so far. */
  maxInFlight: number;
  interrupts: number;
  maxRead: number;
  maxWrite: number;
  syncs: number;
  protocolErrors: number;
  /** Requests per opcode name. */
  ops: Record<string, number>;
  /** Worker threads still running. */
  workers: number;
  /** Set once close() finished. */
  closedBy: ClosedBy | null;
}

export interface KernelFuseDisk extends FuseDisk {
  readonly backend: 'kernel';
  /**
   * Makes every serving thread drop key schedules whose keyring slot was wiped (DiskIo.refresh()).
   * Idle threads are woken by reads of the disk file from libuv's threadpool. True once every
   * thread acknowledged (or has exited), false after `timeoutMs` (default 5 s).
   */
  dropKeys(timeoutMs?: number): Promise<boolean>;
  /** Counters for tests and diagnostics. */
  stats(): KernelStats;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Mounts the disk described by `opts.disk` as the regular file `opts.mountPath` (fuse.atrest, S_IFREG
 * 0600, owned by this process's user, size = disk size) and serves it from worker threads speaking
 * the FUSE kernel protocol, until close(). Fails with NAME_IN_USE if something is mounted there.
 */
export async function serveDiskKernel(opts: ServeDiskKernelOptions): Promise<KernelFuseDisk> {
  const mountPath = resolve(opts.mountPath);
  const disk = opts.disk;
  const count = opts.workers ?? 4;
  if (!Number.isInteger(count) || count < 1 || count > MAX_WORKERS) {
    throw new AtrestError('USAGE', `FUSE worker count ${count} is not an integer from 1 to ${MAX_WORKERS}`);
  }
  const maxMinor = opts.maxMinor;
  if (
    maxMinor !== undefined &&
    (!Number.isInteger(maxMinor) || maxMinor < FUSE_MIN_MINOR || maxMinor > FUSE_MAX_KNOWN_MINOR)
  ) {
    throw new AtrestError(
      'USAGE',
      `FUSE protocol minor cap ${maxMinor} is not an integer from ${FUSE_MIN_MINOR} to ${FUSE_MAX_KNOWN_MINOR}`,
      { hint: 'fix ATREST_FUSE_MAX_MINOR, or unset it to take what the kernel offers' },
    );
  }
  const diskFile = await claimDiskFile(mountPath);
  const { parentDev } = diskFile;
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const options = kernelMountOptions({ uid, gid, allowOther: opts.allowOther });
  const mountTimeoutMs = opts.mountTimeoutMs ?? 10_000;
  const unmountTimeoutMs = opts.unmountTimeoutMs ?? 5_000;

  let fuseFd: number;
  try {
    fuseFd = await openFuseDevice();
  } catch (err) {
    await removeDiskFile(mountPath, diskFile, true);
    throw err;
  }
  const ctl = newControl();
  let connection = -1;
  const time = Math.floor(Date.now() / 1000);
  const workers: Worker[] = [];
  const exited: Promise<void>[] = [];
  let alive = 0;
  let fatal = null as string | null;
  let initSeen: (m: WorkerMessage & { type: 'init' }) => void = () => undefined;
  const initMessage = new Promise<WorkerMessage & { type: 'init' }>((r) => (initSeen = r));
  let entry: string;
  let diskIoModule: string | undefined;
  try {
    entry = await workerUrl(workerEntry());
    diskIoModule = opts.diskIoModule === undefined ? undefined : await workerUrl(opts.diskIoModule);
  } catch (err) {
    await closeFd(fuseFd);
    await removeDiskFile(mountPath, diskFile, true);
    throw new AtrestError('INTERNAL', `cannot load the FUSE worker module: ${String(err)}`, { cause: err });
  }
  for (let i = 0; i < count; i++) {
    Atomics.store(ctl, ackIndex(i), 0);
    const data: WorkerInit = {
      fuseFd,
      disk,
      ctl,
      index: i,
      maxMinor: opts.maxMinor,
      uid,
      gid,
      time,
      diskIoModule,
    };
    // bundled from sources: no execArgv (a parent's `--import tsx` would cost seconds per thread)
    const execArgv = entry.startsWith('data:') ? [] : undefined;
    const w = new Worker(new URL(entry), { workerData: data, name: `atrest-fuse-${i}`, execArgv });
    alive++;
    w.on('message', (m: WorkerMessage) => {
      if (m.type === 'init') initSeen(m);
      else fatal ??= m.message;
    });
    w.on('error', (err) => (fatal ??= err.message));
    exited.push(
      new Promise<void>((r) =>
        w.on('exit', () => {
          alive--;
          Atomics.store(ctl, ackIndex(i), ACK_GONE);
          // the last serving thread died on its own (a bug, not close()): abort our connection so
          // requests fail with ENOTCONN instead of waiting forever for a reply
          if (alive === 0 && Atomics.load(ctl, Ctl.STOP) === 0 && connection >= 0) {
            void abortConnection(connection);
          }
          r();
        }),
      ),
    );
    workers.push(w);
  }
  const allExited = (ms: number): Promise<boolean> =>
    Promise.race([Promise.all(exited).then(() => true), sleep(ms).then(() => false)]);

  let mounted = false;
  let closing: Promise<void> | null = null;

  let closedBy: ClosedBy | null = null;
  const teardown = async (): Promise<void> => {
    Atomics.store(ctl, Ctl.STOP, 1);
    let how: ClosedBy = 'none';
    if (mounted || (await fuseMountAt(mountPath)) !== null) {
      const step = { timeoutMs: unmountTimeoutMs, hostMounts: true };
      // a clean unmount fails while the file is open (a loop device, a process): then detach it
      // lazily and abort our own connection below once the serving threads do not see ENODEV
      await spawnHelper('umount', ['-i', mountPath], step).catch(() => null);
      how = 'umount';
      if ((await fuseMountAt(mountPath)) !== null) {
        await spawnHelper('umount', ['-i', '-l', mountPath], step).catch(() => null);
        how = 'lazy';
      }
    }
    if (!(await allExited(Math.min(2_000, unmountTimeoutMs)))) {
      // only ever the id recorded at mount time: ids are reused right after an unmount
      if (connection >= 0) await abortConnection(connection);
      how = 'abort';
      if (!(await allExited(unmountTimeoutMs))) {
        // blocked elsewhere than in read(2) (e.g. Atomics.wait on a range lock): terminate interrupts that
        how = 'terminate';
        await Promise.race([Promise.all(workers.map((w) => w.terminate())), sleep(unmountTimeoutMs)]);
      }
    }
    // never close the device under a live thread: it would go on reading and writing whatever file
    // gets this descriptor number next
    if (alive === 0) await closeFd(fuseFd);
    else how = 'stuck';
    closedBy = how;
    await removeDiskFile(mountPath, diskFile);
  };

  let phase = 'mount(8)';
  try {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(
        () =>
          rej(
            new AtrestError(
              'TIMEOUT',
              `the FUSE mount on ${mountPath} did not come up within ${mountTimeoutMs} ms (waiting for ${phase})`,
              {
                path: mountPath,
              },
            ),
          ),
        mountTimeoutMs,
      );
    });
    try {
      // the mount helper and INIT race: the workers answer INIT while mount(8) may still run
      const mountDone = mountFuseFd(fuseFd, mountPath, options, mountTimeoutMs).then(() => {
        if (phase === 'mount(8)') phase = 'the kernel INIT request';
        mounted = true;
      });
      const init = await Promise.race([
        initMessage,
        timeout,
        mountDone.then(() => Promise.race([initMessage, timeout])),
      ]);
      phase = 'mount(8) to finish';
      await Promise.race([mountDone, timeout]);
      phase = 'the mount to show in /proc/self/mountinfo';
      if (init.result !== 'ok') {
        throw new AtrestError(
          'NO_FUSE',
          `cannot serve ${mountPath}: ${init.reason ?? 'INIT was not accepted'}`,
          {
            path: mountPath,
            hint: 'use a newer kernel, or the libfuse backend',
          },
        );
      }
      const entry = await Promise.race([waitForMountEntry(mountPath, mountTimeoutMs), timeout]);
      if (entry === null) {
        throw new AtrestError(
          'NO_FUSE',
          `the FUSE mount on ${mountPath} does not show in /proc/self/mountinfo`,
          {
            path: mountPath,
          },
        );
      }
      connection = entry.minor;
      // asynchronous stat (libuv threadpool): the workers answer the GETATTR
      phase = 'a stat of the mounted file';
      const st = await Promise.race([stat(mountPath), timeout]);
      if (st.dev === parentDev || st.size !== disk.size) {
        throw new AtrestError('NO_FUSE', `the disk file ${mountPath} does not show the mount`, {
          path: mountPath,
        });
      }
    } finally {
      clearTimeout(timer);
    }
  } catch (err) {
    await teardown().catch(() => undefined);
    if (fatal !== null && !(err instanceof AtrestError && err.code === 'NO_FUSE')) {
      throw new AtrestError('NO_FUSE', `a FUSE serving thread failed: ${fatal}`, {
        path: mountPath,
        cause: err,
      });
    }
    throw err;
  }

  let wakeChain: Promise<unknown> = Promise.resolve();
  const acked = (gen: number): boolean => {
    for (let i = 0; i < count; i++) {
      const a = Atomics.load(ctl, ackIndex(i));
      if (a !== ACK_GONE && a !== gen) return false;
    }
    return true;
  };
  const dropKeys = async (timeoutMs = 5_000): Promise<boolean> => {
    const gen = Atomics.add(ctl, Ctl.DROP_GEN, 1) + 1;
    if (acked(gen)) return true;
    const deadline = Date.now() + timeoutMs;
    const held: { fh: FileHandle | null } = { fh: null };
    let pending: Promise<unknown> | null = null;
    const wake = async (): Promise<void> => {
      // each read is one request; the kernel hands requests to the longest-waiting reader first, so
      // successive reads reach every idle thread (the reply is EIO once the volume is locked)
      held.fh ??= await openFile(mountPath, fsConstants.O_RDONLY);
      await held.fh.read(Buffer.alloc(512), 0, 512, 0).catch(() => undefined);
    };
    try {
      while (!acked(gen) && Date.now() < deadline) {
        // one wake-up read at a time: never more than one threadpool thread waits on our own mount
        pending ??= wake().then(
          () => (pending = null),
          () => sleep(20).then(() => (pending = null)),
        );
        await Promise.race([pending, sleep(Math.max(1, Math.min(20, deadline - Date.now())))]);
      }
      return acked(gen);
    } finally {
      const last = pending ?? Promise.resolve();
      wakeChain = wakeChain.then(() => last).then(() => held.fh?.close().catch(() => undefined));
    }
  };

  const close = (): Promise<void> => {
    closing ??= (async () => {
      await teardown();
      await wakeChain.catch(() => undefined);
    })();
    return closing;
  };

  return {
    backend: 'kernel',
    mountPath,
    connection,
    options,
    get inFlight() {
      return Atomics.load(ctl, Ctl.IN_FLIGHT);
    },
    close,
    dropKeys,
    stats: () => {
      const ops: Record<string, number> = {};
      for (let op = 1; op < OP_SLOTS; op++) {
        const n = Atomics.load(ctl, Ctl.OPS + op);
        if (n !== 0) ops[opName(op)] = n;
      }
      return {
        minor: Atomics.load(ctl, Ctl.MINOR),
        kernelMinor: Atomics.load(ctl, Ctl.KERNEL_MINOR),
        flags: Atomics.load(ctl, Ctl.INIT_FLAGS) >>> 0,
        kernelFlags: Atomics.load(ctl, Ctl.KERNEL_FLAGS) >>> 0,
        inFlight: Atomics.load(ctl, Ctl.IN_FLIGHT),
        maxInFlight: Atomics.load(ctl, Ctl.MAX_IN_FLIGHT),
        interrupts: Atomics.load(ctl, Ctl.INTERRUPTS),
        maxRead: Atomics.load(ctl, Ctl.MAX_READ),
        maxWrite: Atomics.load(ctl, Ctl.MAX_WRITE),
        syncs: Atomics.load(ctl, Ctl.SYNCS),
        protocolErrors: Atomics.load(ctl, Ctl.PROTOCOL_ERRORS),
        ops,
        workers: alive,
        closedBy,
      };
    },
  };
}
