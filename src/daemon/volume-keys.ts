// The pool keys one open volume holds (its key, a conversion's old and new keys): owned together, wiped together.
import type { PoolKey } from '../crypto/index.js';
import { AtrestError } from '../errors/index.js';

/** Where keys go: the daemon's crypto pool (made on first use). */
export interface KeyPool {
  addKey(key: Uint8Array): Promise<PoolKey>;
}

/**
 * Every key a volume has handed to the crypto pool. Lock, close and every failed open or reencrypt
 * end with wipeAll(), so no key outlives the volume in the keyring or the workers. After wipeAll()
 * nothing more can be added: a key added meanwhile (lock during an open step) is wiped at once.
 */
export class VolumeKeys {
  readonly #keys = new Set<PoolKey>();
  #wiped = false;

  constructor(private readonly pool: () => KeyPool) {}

  /** Keys held now. */
  get size(): number {
    return this.#keys.size;
  }

  /** Hands a copy of `key` to the pool and owns it (the caller still wipes its own Buffer). */
  async add(key: Uint8Array): Promise<PoolKey> {
    if (this.#wiped) throw wipedError();
    const k = await this.pool().addKey(key);
    if (this.#wiped) {
      await k.wipe();
      throw wipedError();
    }
    this.#keys.add(k);
    return k;
  }

  /** Wipes one key early (the key a finished or failed conversion no longer needs). */
  async drop(k: PoolKey | null | undefined): Promise<void> {
    if (k === null || k === undefined) return;
    this.#keys.delete(k);
    await k.wipe();
  }

  /** Wipes every key, in the main thread and every worker. Idempotent. */
  async wipeAll(): Promise<void> {
    this.#wiped = true;
    const keys = [...this.#keys];
    this.#keys.clear();
    const results = await Promise.allSettled(keys.map((k) => k.wipe()));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

function wipedError(): AtrestError {
  return new AtrestError('LOCKED', 'the volume was locked or closed while its keys were being loaded', {
    hint: 'open the volume again',
  });
}
