// Interval locks over byte (or sector) ranges: shared for readers, exclusive for writers, granted in arrival order.

/** Gives the range back; calling it more than once is harmless. */
export type ReleaseRange = () => void;

interface Request {
  readonly start: number;
  readonly end: number;
  readonly exclusive: boolean;
  grant: () => void;
}

function conflicts(a: Request, b: Request): boolean {
  return a.start < b.end && b.start < a.end && (a.exclusive || b.exclusive);
}

/**
 * A lock manager over half-open ranges [start, end). Two requests conflict when they overlap and at
 * least one is exclusive. Fair: a request is granted only when it conflicts with no held range AND
 * with no request that arrived before it and still waits, so a stream of readers cannot starve a
 * writer (nor writers a reader). Requests over disjoint ranges never wait for each other.
 */
export class RangeLock {
  readonly #held = new Set<Request>();
  readonly #waiting: Request[] = [];

  /** Requests waiting now (for tests and status). */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Ranges held now (for tests and status). */
  get held(): number {
    return this.#held.size;
  }

  /** Resolves once [start, end) is held; exclusive for writers, shared for readers. */
  acquire(start: number, end: number, exclusive: boolean): Promise<ReleaseRange> {
    if (!(end > start)) throw new RangeError(`empty or inverted range [${start}, ${end})`);
    return new Promise<ReleaseRange>((resolve) => {
      const req: Request = {
        start,
        end,
        exclusive,
        grant: () => {
          this.#held.add(req);
          let released = false;
          resolve(() => {
            if (released) return;
            released = true;
            this.#held.delete(req);
            this.#wake();
          });
        },
      };
      if (this.#grantable(req, this.#waiting.length)) req.grant();
      else this.#waiting.push(req);
    });
  }

  /** Runs fn while holding the range. */
  async with<T>(start: number, end: number, exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(start, end, exclusive);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** True when `req` conflicts with no held range and no waiting request before index `before`. */
  #grantable(req: Request, before: number): boolean {
    for (const h of this.#held) if (conflicts(req, h)) return false;
    for (let i = 0; i < before; i++) {
      const w = this.#waiting[i];
      if (w !== undefined && conflicts(req, w)) return false;
    }
    return true;
  }

  #wake(): void {
    for (let i = 0; i < this.#waiting.length;) {
      const req = this.#waiting[i];
      if (req !== undefined && this.#grantable(req, i)) {
        this.#waiting.splice(i, 1);
        req.grant();
      } else {
        i++;
      }
    }
  }
}
