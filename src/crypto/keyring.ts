// The shared keyring: volume keys in one SharedArrayBuffer that every crypto worker sees, one slot per key.
import { AtrestError } from '../errors/index.js';

/** How many keys one pool can hold at once (one per open volume). */
export const KEYRING_SLOTS = 64;
/** Room per slot: the largest XTS key (64 bytes, AES-256-XTS); AES-128-XTS keys use the first 32. */
export const KEY_BYTES = 64;
const HEADER_BYTES = KEYRING_SLOTS * 8;

/**
 * Where one key lives in a shared keyring: the keyring's buffer, the slot and the generation the key
 * was stored under. A thread holding a ref may use the slot only while its generation still matches.
 */
export interface KeyRef {
  readonly keyring: SharedArrayBuffer;
  readonly slot: number;
  readonly generation: number;
}

/**
 * Layout: Int32 generation per slot (0 = empty or wiped), Int32 key length per slot, then 64 key
 * bytes per slot. A worker uses a slot only while its generation equals the one in the request, and
 * drops its key schedule otherwise.
 */
export class Keyring {
  readonly buffer: SharedArrayBuffer;
  readonly generations: Int32Array;
  readonly lengths: Int32Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(HEADER_BYTES + KEYRING_SLOTS * KEY_BYTES);
    if (this.buffer.byteLength !== HEADER_BYTES + KEYRING_SLOTS * KEY_BYTES) {
      throw new AtrestError('INTERNAL', 'the keyring has the wrong size');
    }
    this.generations = new Int32Array(this.buffer, 0, KEYRING_SLOTS);
    this.lengths = new Int32Array(this.buffer, KEYRING_SLOTS * 4, KEYRING_SLOTS);
  }

  /** The whole key area of a slot (KEY_BYTES, a view into shared memory, not a copy). */
  keyView(slot: number): Uint8Array {
    return new Uint8Array(this.buffer, HEADER_BYTES + slot * KEY_BYTES, KEY_BYTES);
  }

  /** Bytes of the key stored in a slot (32 or 64; 0 when empty). */
  keyLength(slot: number): number {
    return Atomics.load(this.lengths, slot);
  }

  generation(slot: number): number {
    return Atomics.load(this.generations, slot);
  }

  /** Stores a copy of `key` in a free slot under generation `gen` (> 0); returns the slot. */
  store(key: Uint8Array, gen: number): number {
    if (key.length === 0 || key.length > KEY_BYTES) {
      throw new AtrestError('INTERNAL', `a ${key.length}-byte key does not fit a keyring slot`);
    }
    for (let slot = 0; slot < KEYRING_SLOTS; slot++) {
      if (Atomics.load(this.generations, slot) !== 0) continue;
      this.keyView(slot).set(key);
      Atomics.store(this.lengths, slot, key.length);
      Atomics.store(this.generations, slot, gen);
      return slot;
    }
    throw new AtrestError('USAGE', `no room for another key: at most ${KEYRING_SLOTS} volumes at once`, {
      hint: 'close a volume first',
    });
  }

  /** Slots in use and non-zero key bytes over all slots (introspection; no key bytes leave). */
  usage(): { slots: number; nonZeroBytes: number } {
    let slots = 0;
    let nonZeroBytes = 0;
    for (let slot = 0; slot < KEYRING_SLOTS; slot++) {
      if (Atomics.load(this.generations, slot) !== 0) slots++;
      for (const b of this.keyView(slot)) if (b !== 0) nonZeroBytes++;
    }
    return { slots, nonZeroBytes };
  }

  /** Marks the slot empty, then zeroes its key bytes. */
  clear(slot: number): void {
    Atomics.store(this.generations, slot, 0);
    this.keyView(slot).fill(0);
    Atomics.store(this.lengths, slot, 0);
  }
}

/**
 * A keyring of its own for code that has no crypto pool (tests, tools): stores keys under fresh
 * generations and hands out their refs.
 */
export class LocalKeyring extends Keyring {
  #nextGeneration = 1;

  /** Stores a copy of `key`; the caller may wipe its own copy. */
  add(key: Uint8Array): KeyRef {
    const generation = this.#nextGeneration++;
    return { keyring: this.buffer, slot: this.store(key, generation), generation };
  }

  /** Empties the slot of `ref` (if it still holds that key). */
  wipe(ref: KeyRef): void {
    if (this.generation(ref.slot) === ref.generation) this.clear(ref.slot);
  }
}
