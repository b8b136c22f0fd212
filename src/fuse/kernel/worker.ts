// A kernel-backend serving thread: blocking read of /dev/fuse, serve the request with DiskIo, write the reply; until the device goes away.
import { Buffer } from 'node:buffer';
import { readSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { DiskIo, DiskIoDescriptor } from '../../volume/disk-io.js';
import { openDiskIo } from '../../volume/disk-io-open.js';
import { ACK_GONE, Ctl, ackIndex, atomicMax } from './control.js';
import { RequestHandler } from './handler.js';
import { MAX_WRITE } from './init.js';

export interface WorkerInit {
  fuseFd: number;
  disk: DiskIoDescriptor;
  ctl: Int32Array;
  index: number;
  maxMinor?: number;
  uid: number;
  gid: number;
  time: number;
  /** Tests only: a module exporting openDiskIo to use instead of the volume layer's. */
  diskIoModule?: string;
}

/** Messages to the session. */
export type WorkerMessage =
  { type: 'init'; result: 'ok' | 'refused' | 'major'; reason?: string } | { type: 'fatal'; message: string };

const init = workerData as WorkerInit;
const ctl = init.ctl;
const ack = ackIndex(init.index);
const nap = new Int32Array(new SharedArrayBuffer(4));

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** Tells the session this thread refreshed its keys against the newest dropKeys() generation. */
function acknowledge(disk: DiskIo): void {
  const gen = Atomics.load(ctl, Ctl.DROP_GEN);
  if (Atomics.load(ctl, ack) === gen) return;
  try {
    disk.refresh();
  } catch {
    return; // no acknowledgement: dropKeys() then reports that not every thread confirmed
  }
  Atomics.store(ctl, ack, gen);
  Atomics.notify(ctl, ack);
}

async function main(): Promise<void> {
  let open = openDiskIo;
  if (init.diskIoModule !== undefined) {
    open = ((await import(init.diskIoModule)) as { openDiskIo: typeof openDiskIo }).openDiskIo;
  }
  const disk = open(init.disk);
  const handler = new RequestHandler({
    disk,
    ctl,
    maxMinor: init.maxMinor,
    uid: init.uid,
    gid: init.gid,
    time: init.time,
  });
  // the kernel wants room for the largest WRITE (header + fuse_write_in + max_write)
  const buf = Buffer.allocUnsafeSlow(MAX_WRITE + 4096);
  try {
    for (;;) {
      acknowledge(disk);
      let n: number;
      try {
        n = readSync(init.fuseFd, buf, 0, buf.length, null);
      } catch (err) {
        const code = codeOf(err);
        // ENODEV: unmounted or aborted; ECONNABORTED: aborted with FUSE_ABORT_ERROR
        if (code === 'ENODEV' || code === 'ECONNABORTED' || code === 'EBADF') return;
        if (Atomics.load(ctl, Ctl.STOP) !== 0) return;
        // EPERM: the mount does not exist yet; EINTR/EAGAIN/ENOENT: a request went away, read again
        if (code === 'EPERM') Atomics.wait(nap, 0, 0, 5);
        else if (code !== 'EINTR' && code !== 'EAGAIN' && code !== 'ENOENT') throw err;
        continue;
      }
      atomicMax(ctl, Ctl.MAX_IN_FLIGHT, Atomics.add(ctl, Ctl.IN_FLIGHT, 1) + 1);
      try {
        acknowledge(disk);
        const out = handler.handle(buf, n);
        if ('init' in out) {
          parentPort?.postMessage({
            type: 'init',
            result: out.init,
            reason: out.reason,
          } satisfies WorkerMessage);
        }
        if (out.reply !== null) {
          try {
            writeSync(init.fuseFd, out.reply, 0, out.reply.length);
          } catch (err) {
            const code = codeOf(err);
            if (code === 'ENODEV' || code === 'ECONNABORTED') return;
            // ENOENT: the request was aborted or interrupted away meanwhile; nothing waits for it
            if (code !== 'ENOENT') throw err;
          }
        }
      } finally {
        Atomics.sub(ctl, Ctl.IN_FLIGHT, 1);
      }
    }
  } finally {
    disk.close();
    Atomics.store(ctl, ack, ACK_GONE);
    Atomics.notify(ctl, ack);
  }
}

main().catch((err: unknown) => {
  Atomics.store(ctl, ack, ACK_GONE);
  const message = err instanceof Error ? `${codeOf(err) || err.name}: ${err.message}` : String(err);
  parentPort?.postMessage({ type: 'fatal', message } satisfies WorkerMessage);
});
