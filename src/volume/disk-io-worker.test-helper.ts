// Test worker thread: serves a volume through openDiskIo (or hammers a shared range lock) as a FUSE worker would, and reports what it wrote.
import { Buffer } from 'node:buffer';
import { parentPort, workerData } from 'node:worker_threads';
import type { DiskIoDescriptor } from './disk-io.js';
import { openDiskIo } from './disk-io-open.js';
import { SharedRangeLock } from './shared-range-lock.js';

export type WorkerJob =
  | {
      kind: 'writer';
      descriptor: DiskIoDescriptor;
      /** Bytes [s, s + seg) with floor(s / seg) % writers === id belong to this writer. */
      id: number;
      writers: number;
      seg: number;
      ops: number;
      seed: number;
    }
  | {
      kind: 'single-write';
      descriptor: DiskIoDescriptor;
      position: number;
      fill: number;
      length: number;
    }
  | {
      kind: 'counter';
      locks: SharedArrayBuffer;
      counter: SharedArrayBuffer;
      ops: number;
      seed: number;
      /** Take no lock (shows the test can fail). */
      unlocked: boolean;
      /** Workers that start together: each waits until this many arrived (barrier in counter bytes 112..119). */
      parties: number;
    };

export type WorkerReply =
  | { ok: true; model?: Uint8Array; mismatches?: number; written?: number }
  | { ok: false; code: string; message: string };

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 0x1_0000_0000;
  };
}

function run(job: WorkerJob): WorkerReply {
  if (job.kind === 'counter') {
    // read-modify-write of plain (non-atomic) per-unit counters [start, start + 4) inside the lock over
    // that range; a lost update shows a broken lock
    const lock = new SharedRangeLock(job.locks);
    const c = new Float64Array(job.counter);
    const barrier = new Int32Array(job.counter, 112, 2);
    Atomics.add(barrier, 0, 1);
    Atomics.notify(barrier, 0);
    for (let n; (n = Atomics.load(barrier, 0)) < job.parties;) Atomics.wait(barrier, 0, n, 50);
    const rand = lcg(job.seed);
    for (let i = 0; i < job.ops; i++) {
      const start = Math.floor(rand() * 8);
      const h = job.unlocked ? -1 : lock.acquireSync(start, start + 4, true);
      for (let k = start; k < start + 4; k++) {
        const v = c[k] ?? 0;
        for (let spin = 0; spin < 400; spin++) c[15] = spin;
        c[k] = v + 1;
      }
      if (h >= 0) lock.release(h);
    }
    return { ok: true };
  }
  const io = openDiskIo(job.descriptor);
  try {
    if (job.kind === 'single-write') {
      const written = io.write(job.position, Buffer.alloc(job.length, job.fill));
      return { ok: true, written };
    }
    const model = Buffer.alloc(io.size);
    const rand = lcg(job.seed);
    const segs = Math.floor(io.size / job.seg);
    let mismatches = 0;
    // start from what is there (the main thread initialised the volume)
    io.readInto(0, io.size, model);
    for (let i = 0; i < job.ops; i++) {
      let s = Math.floor(rand() * segs);
      s -= s % job.writers;
      s += job.id;
      if (s >= segs) continue;
      const from = s * job.seg + Math.floor(rand() * job.seg);
      const to = from + 1 + Math.floor(rand() * (s * job.seg + job.seg - from));
      if (rand() < 0.7) {
        const data = Buffer.alloc(to - from);
        for (let j = 0; j < data.length; j++) data[j] = Math.floor(rand() * 256);
        io.write(from, data);
        data.copy(model, from);
      } else {
        const out = Buffer.alloc(to - from);
        io.readInto(from, to - from, out);
        if (!out.equals(model.subarray(from, to))) mismatches++;
      }
      if (!io.refresh()) throw new Error('lost the key schedule');
    }
    return { ok: true, model, mismatches };
  } finally {
    io.close();
  }
}

try {
  parentPort?.postMessage(run(workerData as WorkerJob));
} catch (err) {
  const e = err as { code?: unknown; message?: unknown };
  parentPort?.postMessage({
    ok: false,
    code: typeof e.code === 'string' ? e.code : 'ERROR',
    message: String(e.message),
  } satisfies WorkerReply);
}
