// The crypto worker pool: XTS runs on piscina worker threads; each volume key reaches the workers once, through a shared keyring.
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { BroadcastChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { AtrestError, isErrorCode } from '../errors/index.js';
import { Keyring, type KeyRef } from './keyring.js';
import { workerModule } from './worker-module.js';
import { isChannelMessage, type TaskError, type WorkerInit, type XtsTask } from './protocol.js';
import { assertXtsKey, assertXtsRun, TWEAK_UNIT, XtsCipher } from './xts.js';

export interface CryptoPoolOptions {
  /** Worker threads; default one per core (os.availableParallelism()). */
  workers?: number;
  /**
   * Runs of at most this many bytes are done on the calling thread, which is quicker than a round
   * trip to a worker (default 16384; 0 sends everything to the workers).
   */
  inlineMaxBytes?: number;
}

export interface PoolKey {
  /** data: whole sectors; returns the result (may be the same Buffer, filled in place). firstTweak in 512-byte units. */
  encrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer>;
  decrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer>;
  /** Zeroes the key in the main thread and in every worker; afterwards encrypt/decrypt reject with AtrestError 'LOCKED'. */
  wipe(): Promise<void>;
  /**
   * Where the key lives in the pool's shared keyring (buffer, slot, generation): other threads build
   * their own key schedule from it and drop it once the slot's generation changes (wipe).
   */
  keyRef(): KeyRef;
}

const DEFAULT_INLINE_MAX_BYTES = 16 * 1024;
/**
 * Requests travel in reusable shared slabs of this size (bigger runs are cut into slab-sized parts that
 * the workers take in parallel): no allocation, page faults or transfer per request.
 */
const SLAB_BYTES = 256 * 1024;
const ZEROS = new Uint8Array(SLAB_BYTES);
/** Idle slabs kept for reuse; more are made when needed and dropped after use. */
const MAX_IDLE_SLABS = 32;
/** How long wipe() waits for every worker to confirm it dropped its key schedule. */
const WIPE_ACK_TIMEOUT_MS = 2000;
const MAX_WORKERS = 256;

function usage(message: string): AtrestError {
  return new AtrestError('USAGE', message);
}

function validateOptions(options: unknown): { workers: number; inlineMaxBytes: number } {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw usage('crypto pool options must be an object');
  }
  for (const name of Object.keys(options)) {
    if (name !== 'workers' && name !== 'inlineMaxBytes') throw usage(`unknown crypto pool option ${name}`);
  }
  const { workers, inlineMaxBytes } = options as Record<string, unknown>;
  if (
    workers !== undefined &&
    (typeof workers !== 'number' || !Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS)
  ) {
    throw usage(`crypto pool workers must be an integer from 1 to ${MAX_WORKERS}`);
  }
  if (
    inlineMaxBytes !== undefined &&
    (typeof inlineMaxBytes !== 'number' || !Number.isSafeInteger(inlineMaxBytes) || inlineMaxBytes < 0)
  ) {
    throw usage('crypto pool inlineMaxBytes must be a non-negative integer');
  }
  return {
    workers: workers ?? Math.max(1, availableParallelism()),
    inlineMaxBytes: inlineMaxBytes ?? DEFAULT_INLINE_MAX_BYTES,
  };
}

function errorFromReply(reply: unknown): AtrestError {
  const r = reply as Partial<TaskError> | null;
  if (r && typeof r.code === 'string' && typeof r.message === 'string') {
    return new AtrestError(isErrorCode(r.code) ? r.code : 'INTERNAL', r.message);
  }
  return new AtrestError('INTERNAL', 'crypto worker sent an unexpected reply');
}

interface PendingWipe {
  waiting: Set<number>;
  done: () => void;
}

/** A pool of crypto worker threads (piscina) with a shared keyring. */
export class CryptoPool {
  readonly workers: number;
  readonly inlineMaxBytes: number;
  readonly #keyring = new Keyring();
  readonly #keys = new Set<PoolKeyImpl>();
  readonly #ready = new Set<number>();
  readonly #wipes = new Map<number, PendingWipe>();
  readonly #slabs: SharedArrayBuffer[] = [];
  readonly #channel: BroadcastChannel;
  #piscina: Piscina | null;
  #destroyed: Promise<void> | null = null;
  #nextGeneration = 1;
  #nextWipeId = 1;

  constructor(options?: CryptoPoolOptions) {
    const { workers, inlineMaxBytes } = validateOptions(options);
    this.workers = workers;
    this.inlineMaxBytes = inlineMaxBytes;
    const channelName = `atrest-crypto-${randomBytes(12).toString('hex')}`;
    this.#channel = new BroadcastChannel(channelName);
    (this.#channel as unknown as { unref?: () => void }).unref?.();
    this.#channel.onmessage = (event: MessageEvent): void => this.#onChannel(event.data);
    const init: WorkerInit = { keyring: this.#keyring.buffer, channel: channelName };
    this.#piscina = new Piscina({
      ...workerModule('worker'),
      minThreads: workers,
      maxThreads: workers,
      // workers must run their event loop between tasks to hear wipe notices
      atomics: 'disabled',
      // queue a few tasks in each worker so it never idles through a round trip (~100 us here);
      // tasks still run one at a time there (they are synchronous)
      concurrentTasksPerWorker: 4,
      // per-task timing histograms cost tens of microseconds a task; nothing reads them
      recordTiming: false,
      workerData: init,
    });
  }

  /** Makes the key available to every worker once (not per request); copies it. Refuses weak keys. */
  addKey(key: Uint8Array): Promise<PoolKey> {
    try {
      if (this.#destroyed) throw usage('the crypto pool has been destroyed');
      assertXtsKey(key);
      const local = new XtsCipher(key);
      const generation = this.#nextGeneration++;
      let slot: number;
      try {
        slot = this.#keyring.store(key, generation);
      } catch (err) {
        local.wipe();
        throw err;
      }
      const k = new PoolKeyImpl(this, local, { keyring: this.#keyring.buffer, slot, generation });
      this.#keys.add(k);
      return Promise.resolve(k);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new AtrestError('INTERNAL', String(err)));
    }
  }

  /** The shared keyring every key of this pool lives in (see PoolKey.keyRef). */
  get keyringBuffer(): SharedArrayBuffer {
    return this.#keyring.buffer;
  }

  /**
   * What the shared keyring holds right now: slots in use, and key bytes that are not zero in any
   * slot (a wiped key leaves none). For tests and diagnostics; never exposes key bytes.
   */
  keyringUsage(): { keys: number; slots: number; nonZeroBytes: number } {
    return { keys: this.#keys.size, ...this.#keyring.usage() };
  }

  /** Wipes every key, then stops the workers. */
  destroy(): Promise<void> {
    this.#destroyed ??= (async (): Promise<void> => {
      await Promise.all([...this.#keys].map((k) => k.wipe()));
      const p = this.#piscina;
      this.#piscina = null;
      try {
        await p?.destroy();
      } finally {
        this.#channel.close();
        for (const w of this.#wipes.values()) w.done();
      }
    })();
    return this.#destroyed;
  }

  /** @internal Runs one request in place, cut into slab-sized parts that the workers share. */
  async run(
    op: XtsTask['op'],
    slot: number,
    generation: number,
    data: Uint8Array,
    sectorSize: number,
    firstTweak: number,
  ): Promise<void> {
    if (data.length <= SLAB_BYTES) {
      await this.#runPart(op, slot, generation, data, sectorSize, firstTweak);
      return;
    }
    const parts: Array<Promise<void>> = [];
    for (let off = 0; off < data.length; off += SLAB_BYTES) {
      const part = data.subarray(off, Math.min(off + SLAB_BYTES, data.length));
      parts.push(this.#runPart(op, slot, generation, part, sectorSize, firstTweak + off / TWEAK_UNIT));
    }
    // every part settles before we report, so no worker still writes into `data` afterwards
    const results = await Promise.allSettled(parts);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  async #runPart(
    op: XtsTask['op'],
    slot: number,
    generation: number,
    data: Uint8Array,
    sectorSize: number,
    firstTweak: number,
  ): Promise<void> {
    const piscina = this.#piscina;
    if (!piscina) throw new AtrestError('LOCKED', 'the crypto pool has been destroyed');
    const slab = this.#slabs.pop() ?? new SharedArrayBuffer(SLAB_BYTES);
    const view = new Uint8Array(slab, 0, data.length);
    view.set(data);
    const task: XtsTask = { op, slot, generation, sectorSize, firstTweak, slab, length: data.length };
    let reply: unknown;
    try {
      reply = await piscina.run(task);
    } catch (err) {
      throw new AtrestError('INTERNAL', 'a crypto worker failed', { cause: err });
    } finally {
      if (reply === null) data.set(view);
      // (fill() on shared memory runs byte by byte; copying zeros is a memcpy)
      if (op === 'decrypt' || reply !== null) view.set(ZEROS.subarray(0, view.length));
      if (this.#slabs.length < MAX_IDLE_SLABS) this.#slabs.push(slab);
    }
    if (reply !== null) throw errorFromReply(reply);
  }

  /** @internal Empties the key's slot, then waits until every live worker has dropped its schedule. */
  async release(k: PoolKeyImpl, slot: number, generation: number): Promise<void> {
    this.#keys.delete(k);
    this.#keyring.clear(slot);
    const live = new Set((this.#piscina?.threads ?? []).map((t) => t.threadId));
    const waiting = new Set([...this.#ready].filter((id) => live.has(id)));
    if (waiting.size === 0) return;
    const id = this.#nextWipeId++;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(finish, WIPE_ACK_TIMEOUT_MS);
      function finish(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wipes.set(id, {
        waiting,
        done: () => {
          this.#wipes.delete(id);
          finish();
        },
      });
      this.#channel.postMessage({ type: 'wipe', slot, generation, id });
    });
  }

  #onChannel(msg: unknown): void {
    if (!isChannelMessage(msg)) return;
    if (msg.type === 'ready') {
      this.#ready.add(msg.threadId);
    } else if (msg.type === 'wiped') {
      const w = this.#wipes.get(msg.id);
      if (!w) return;
      w.waiting.delete(msg.threadId);
      if (w.waiting.size === 0) w.done();
    }
  }
}

class PoolKeyImpl implements PoolKey {
  #local: XtsCipher;
  #wiping: Promise<void> | null = null;

  constructor(
    private readonly pool: CryptoPool,
    local: XtsCipher,
    private readonly ref: KeyRef,
  ) {
    this.#local = local;
  }

  keyRef(): KeyRef {
    return this.ref;
  }

  encrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    return this.#run('encrypt', data, sectorSize, firstTweak);
  }

  decrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    return this.#run('decrypt', data, sectorSize, firstTweak);
  }

  wipe(): Promise<void> {
    this.#wiping ??= (async (): Promise<void> => {
      this.#local.wipe();
      await this.pool.release(this, this.ref.slot, this.ref.generation);
    })();
    return this.#wiping;
  }

  async #run(op: XtsTask['op'], data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    if (this.#wiping) throw new AtrestError('LOCKED', 'the volume key has been wiped');
    assertXtsRun(data, sectorSize, firstTweak);
    if (data.length === 0) return data;
    if (data.length <= this.pool.inlineMaxBytes) {
      this.#local.inPlace(op, data, sectorSize, firstTweak);
      return data;
    }
    await this.pool.run(op, this.ref.slot, this.ref.generation, data, sectorSize, firstTweak);
    return data;
  }
}
