// Sector ciphers the volume layer encrypts with: the interface, the identity (bench only) and an in-process XTS.
import type { Buffer } from 'node:buffer';
import { XtsCipher, type XtsDirection } from '../crypto/xts.js';

/**
 * Encrypts or decrypts whole sectors. `firstTweak` is in 512-byte units: the sector at data-segment
 * byte offset `o` has tweak `o / 512 + ivTweak`. Returns the result, which may be `data` itself
 * filled in place. The crypto pool's PoolKey satisfies this interface structurally.
 */
export interface SectorCipher {
  encrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer>;
  decrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer>;
}

/** The identity: for benchmarks comparing against an unencrypted backend only. Never use for data. */
export class PlainCipher implements SectorCipher {
  encrypt(data: Buffer): Promise<Buffer> {
    return Promise.resolve(data);
  }

  decrypt(data: Buffer): Promise<Buffer> {
    return Promise.resolve(data);
  }
}

/**
 * AES-256-XTS in the calling thread (blocks the event loop while it runs): for tests and tools that
 * must not depend on the worker pool. Call wipe() when done; afterwards every call rejects LOCKED.
 */
export class InProcessXtsCipher implements SectorCipher {
  readonly #xts: XtsCipher;

  /** Copies what it needs from the 64-byte key; the caller may wipe its copy. */
  constructor(key: Uint8Array) {
    this.#xts = new XtsCipher(key);
  }

  encrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    return this.#run('encrypt', data, sectorSize, firstTweak);
  }

  decrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    return this.#run('decrypt', data, sectorSize, firstTweak);
  }

  wipe(): void {
    this.#xts.wipe();
  }

  #run(direction: XtsDirection, data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    try {
      this.#xts.inPlace(direction, data, sectorSize, firstTweak);
      return Promise.resolve(data);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
