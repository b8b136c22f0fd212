// A periodic task that cannot wedge (the next pass is always scheduled once the last settles or is abandoned), plus call timeouts.

/** Thrown by withTimeout when the call did not settle in time (the call itself keeps running). */
export class TimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`${what} did not finish within ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/**
 * Settles like `p`, or rejects with TimeoutError after `ms`. `p` is not cancelled: its late result
 * or failure is ignored (never an unhandled rejection).
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(what, ms)), ms);
    timer.unref();
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * Runs at most one call per key at a time: a caller asking while one runs shares it. Used so a call
 * that hangs (a provider, a header on stalled storage) is not started again on every pass.
 */
export class SingleFlight<T> {
  readonly #running = new Map<string, Promise<T>>();

  run(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.#running.get(key);
    if (running !== undefined) return running;
    const p = Promise.resolve().then(fn);
    this.#running.set(key, p);
    // removed by identity after it settles (a later call under the same key is never removed by it)
    const clear = (): void => {
      if (this.#running.get(key) === p) this.#running.delete(key);
    };
    p.then(clear, clear);
    return p;
  }

  get size(): number {
    return this.#running.size;
  }
}

export interface PeriodicOptions {
  /** Pause between the end of one pass and the start of the next. */
  intervalMs: number;
  /** A pass still running after this long is abandoned: it keeps running, but the next one is scheduled. */
  passTimeoutMs: number;
  /** A pass threw, rejected or was abandoned (never stops the task). */
  onError?: (err: unknown) => void;
}

/**
 * Runs `pass` every `intervalMs` until stop(). Whatever a pass does (returns at once, throws
 * synchronously, rejects, hangs forever), the next one is scheduled: scheduling happens in a
 * `finally` after a bounded wait, and no state survives from one pass to the next.
 */
export class Periodic {
  #timer: NodeJS.Timeout | null = null;
  #current: Promise<void> | null = null;
  #stopped = true;
  #passes = 0;

  constructor(
    private readonly pass: () => Promise<void> | void,
    private readonly opts: PeriodicOptions,
  ) {}

  /** Passes finished so far (completed, failed or abandoned). */
  get passes(): number {
    return this.#passes;
  }

  get running(): boolean {
    return !this.#stopped;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule();
  }

  /** Stops scheduling; waits (at most the pass timeout) for a pass in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#current;
  }

  #schedule(): void {
    if (this.#stopped || this.#timer !== null) return;
    const timer = setTimeout(() => {
      this.#timer = null;
      void this.#runOnce();
    }, this.opts.intervalMs);
    timer.unref();
    this.#timer = timer;
  }

  async #runOnce(): Promise<void> {
    const p = this.#bounded();
    this.#current = p;
    try {
      await p;
    } finally {
      if (this.#current === p) this.#current = null;
      this.#passes++;
      this.#schedule();
    }
  }

  /** One pass, bounded; never rejects. */
  async #bounded(): Promise<void> {
    try {
      await withTimeout(
        Promise.resolve().then(() => this.pass()),
        this.opts.passTimeoutMs,
        'periodic pass',
      );
    } catch (err) {
      try {
        this.opts.onError?.(err);
      } catch {
        /* a failing logger must not stop the task */
      }
    }
  }
}
