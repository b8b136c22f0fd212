// One thread's XTS key schedules (crypto workers, FUSE serving threads), built from the shared keyring by (slot, generation) and dropped once the slot is wiped or reused.
import { Buffer } from 'node:buffer';
import { Keyring } from './keyring.js';
import { XtsCipher } from './xts.js';

/**
 * The key schedules a thread holds, one XtsCipher per keyring slot. A schedule is used only
 * while the slot's generation equals the one asked for; a copy taken while the slot was being wiped
 * is never used (the generation is checked again after the copy).
 */
export class KeyCache {
  readonly #keyring: Keyring;
  readonly #cache = new Map<number, { generation: number; cipher: XtsCipher }>();

  constructor(keyring: SharedArrayBuffer) {
    this.#keyring = new Keyring(keyring);
  }

  get size(): number {
    return this.#cache.size;
  }

  /** The schedule for (slot, generation); null once that key was wiped. */
  cipherFor(slot: number, generation: number): XtsCipher | null {
    const keyring = this.#keyring;
    if (keyring.generation(slot) !== generation) {
      this.#drop(slot);
      return null;
    }
    const entry = this.#cache.get(slot);
    if (entry && entry.generation === generation) return entry.cipher;
    this.#drop(slot);
    const key = Buffer.alloc(keyring.keyLength(slot));
    let cipher: XtsCipher | null = null;
    let failure: unknown = null;
    try {
      key.set(keyring.keyView(slot).subarray(0, key.length));
      cipher = new XtsCipher(key);
    } catch (err) {
      failure = err;
    } finally {
      key.fill(0);
    }
    // wiped while we copied it: the copy may be part zeros, so never use it
    if (keyring.generation(slot) !== generation) {
      cipher?.wipe();
      return null;
    }
    if (cipher === null) throw failure;
    this.#cache.set(slot, { generation, cipher });
    return cipher;
  }

  /** Drops every schedule whose slot no longer holds its generation; returns how many are left. */
  refresh(): number {
    for (const [slot, entry] of this.#cache) {
      if (this.#keyring.generation(slot) !== entry.generation) this.#drop(slot);
    }
    return this.#cache.size;
  }

  /** Drops the schedule of `slot` if it was made for `generation` (a wipe notice for that key). */
  dropGeneration(slot: number, generation: number): void {
    if (this.#cache.get(slot)?.generation === generation) this.#drop(slot);
  }

  wipeAll(): void {
    for (const slot of [...this.#cache.keys()]) this.#drop(slot);
  }

  #drop(slot: number): void {
    const entry = this.#cache.get(slot);
    if (entry) {
      entry.cipher.wipe();
      this.#cache.delete(slot);
    }
  }
}
