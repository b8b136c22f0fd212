// AES-XTS (256- or 512-bit keys) over runs of sectors (dm-crypt aes-xts-plain64): one OpenSSL AES-ECB call per 64 KiB chunk, tweaks by a WebAssembly SIMD kernel.
import { Buffer } from 'node:buffer';
import { createCipheriv, createDecipheriv, type Cipher, type Decipher } from 'node:crypto';
import { AtrestError } from '../errors/index.js';
import { XTS_KERNEL_WASM_BASE64 } from './xts-kernel-wasm.js';

/** XTS tweaks always count 512-byte units (LUKS2 never sets iv_large_sectors). */
export const TWEAK_UNIT = 512;

/** Which way a run goes: the one parameter that tells encryption and decryption apart. */
export type XtsDirection = 'encrypt' | 'decrypt';

/** The sector sizes LUKS2 allows. */
export const SECTOR_SIZES: readonly number[] = [512, 1024, 2048, 4096];

/**
 * XTS key sizes in bytes: 32 (AES-128-XTS, cryptsetup `--key-size 256`; opened, never created) and
 * 64 (AES-256-XTS, what atrest creates).
 */
export const XTS_KEY_SIZES: readonly number[] = [32, 64];

/**
 * Refuses anything but a 32- or 64-byte key whose two halves differ (FIPS 140 / IEEE 1619
 * requirement: key1 != key2).
 */
export function assertXtsKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || !XTS_KEY_SIZES.includes(key.length)) {
    const bits = key instanceof Uint8Array ? key.length * 8 : 0;
    throw new AtrestError(
      'UNSUPPORTED',
      `AES-XTS needs a 256-bit (AES-128-XTS) or 512-bit (AES-256-XTS) key, got ${bits} bits`,
    );
  }
  const half = key.length / 2;
  if (
    Buffer.from(key.buffer, key.byteOffset, half).equals(Buffer.from(key.buffer, key.byteOffset + half, half))
  ) {
    throw new AtrestError('WEAK_KEY', 'the two halves of the XTS key are equal, which XTS forbids', {
      hint: 'make a new volume key',
    });
  }
}

/**
 * Checks one run: `data` is whole sectors of a LUKS2 sector size, and every tweak of the run (from
 * `firstTweak`, in 512-byte units) is a non-negative safe integer.
 */
export function assertXtsRun(data: Uint8Array, sectorSize: number, firstTweak: number): void {
  if (!(data instanceof Uint8Array)) {
    throw new AtrestError('INTERNAL', 'XTS data must be a Buffer or Uint8Array');
  }
  if (!SECTOR_SIZES.includes(sectorSize)) {
    throw new AtrestError('UNSUPPORTED', `sector size ${sectorSize} is not one of 512, 1024, 2048, 4096`);
  }
  if (data.length % sectorSize !== 0) {
    throw new AtrestError(
      'INTERNAL',
      `XTS run of ${data.length} bytes is not whole ${sectorSize}-byte sectors`,
    );
  }
  const sectors = data.length / sectorSize;
  const lastTweak = firstTweak + Math.max(0, sectors - 1) * (sectorSize / TWEAK_UNIT);
  if (!Number.isSafeInteger(firstTweak) || firstTweak < 0 || !Number.isSafeInteger(lastTweak)) {
    throw new AtrestError('INTERNAL', `XTS tweak ${String(firstTweak)} is not a non-negative safe integer`);
  }
}

// ---- the WebAssembly kernel -------------------------------------------------------------------

/** Bytes of data per OpenSSL call; keeps data and tweaks in L2. */
const CHUNK = 64 * 1024;
/** Where the encrypted tweaks of a chunk live in kernel memory (after the data). */
const TWEAKS = CHUNK;
const MAX_TWEAK_BYTES = (CHUNK / 512) * 16;

interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  Memory: new (desc: { initial: number }) => { buffer: ArrayBuffer };
}

interface Kernel {
  mem: Uint8Array;
  mem32: Uint32Array;
  xorTweaks: (data: number, tweaks: number, sectors: number, blocksPerSector: number) => void;
}

let kernel: Kernel | undefined;

/** The kernel instance of this thread (one per thread; calls never overlap within a thread). */
function getKernel(): Kernel {
  if (kernel) return kernel;
  const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
  if (!wasm) throw new AtrestError('INTERNAL', 'this Node.js has no WebAssembly');
  const instance = new wasm.Instance(new wasm.Module(Buffer.from(XTS_KERNEL_WASM_BASE64, 'base64')), {});
  const memory = instance.exports.memory;
  const xorTweaks = instance.exports.xorTweaks;
  if (
    typeof xorTweaks !== 'function' ||
    !(memory instanceof wasm.Memory) ||
    memory.buffer.byteLength < TWEAKS + MAX_TWEAK_BYTES
  ) {
    throw new AtrestError('INTERNAL', 'the XTS kernel does not have the expected exports');
  }
  kernel = {
    mem: new Uint8Array(memory.buffer),
    mem32: new Uint32Array(memory.buffer),
    xorTweaks: xorTweaks as Kernel['xorTweaks'],
  };
  return kernel;
}

/** The OpenSSL ECB cipher for one XTS half key: aes-128-ecb for 16 bytes, aes-256-ecb for 32. */
function ecbName(half: Uint8Array): 'aes-128-ecb' | 'aes-256-ecb' {
  return half.length === 16 ? 'aes-128-ecb' : 'aes-256-ecb';
}

function ecbCipher(key: Uint8Array): Cipher {
  const c = createCipheriv(ecbName(key), key, null);
  c.setAutoPadding(false);
  return c;
}

function ecbDecipher(key: Uint8Array): Decipher {
  const c = createDecipheriv(ecbName(key), key, null);
  c.setAutoPadding(false);
  return c;
}

/**
 * One AES-XTS key (AES-128-XTS for 32 bytes, AES-256-XTS for 64), ready to use: the OpenSSL key schedules are made once and reused for every
 * run (ECB has no state between calls). Call wipe() when done; afterwards every run throws LOCKED.
 */
export class XtsCipher {
  #enc1: Cipher | null;
  #dec1: Decipher | null;
  #enc2: Cipher | null;

  /** Copies what it needs from `key`; the caller may wipe its copy afterwards. Refuses weak keys. */
  constructor(key: Uint8Array) {
    assertXtsKey(key);
    const half = key.length / 2;
    this.#enc1 = ecbCipher(key.subarray(0, half));
    this.#dec1 = ecbDecipher(key.subarray(0, half));
    this.#enc2 = ecbCipher(key.subarray(half, key.length));
    getKernel();
  }

  get wiped(): boolean {
    return this.#enc1 === null;
  }

  /** Encrypts whole sectors in place; the first sector's tweak is `firstTweak` (512-byte units). */
  encryptInPlace(data: Uint8Array, sectorSize: number, firstTweak: number): void {
    this.inPlace('encrypt', data, sectorSize, firstTweak);
  }

  /** Decrypts whole sectors in place; see encryptInPlace. */
  decryptInPlace(data: Uint8Array, sectorSize: number, firstTweak: number): void {
    this.inPlace('decrypt', data, sectorSize, firstTweak);
  }

  /** Drops the key schedules (OpenSSL frees and cleanses its contexts on final()). */
  wipe(): void {
    for (const c of [this.#enc1, this.#dec1, this.#enc2]) {
      try {
        c?.final();
      } catch {
        /* nothing pending in ECB without padding; the context is released either way */
      }
    }
    this.#enc1 = null;
    this.#dec1 = null;
    this.#enc2 = null;
  }

  /**
   * Encrypts or decrypts whole sectors in place (the one implementation of both; the hot path of every
   * request): the first sector's tweak is `firstTweak` (512-byte units), the next ones step by
   * sectorSize/512. XTS differs between the directions only in the AES call on the data.
   */
  inPlace(direction: XtsDirection, data: Uint8Array, sectorSize: number, firstTweak: number): void {
    const enc2 = this.#enc2;
    const main = direction === 'encrypt' ? this.#enc1 : this.#dec1;
    if (enc2 === null || main === null) {
      throw new AtrestError('LOCKED', 'the volume key has been wiped', { hint: 'open the volume again' });
    }
    assertXtsRun(data, sectorSize, firstTweak);
    if (data.length === 0) return;
    const { mem, mem32, xorTweaks } = getKernel();
    const step = sectorSize / TWEAK_UNIT;
    const blocks = sectorSize / 16;
    let tweak = firstTweak;
    try {
      for (let off = 0; off < data.length; off += CHUNK) {
        const len = Math.min(CHUNK, data.length - off);
        const sectors = len / sectorSize;
        // plain64: the 64-bit little-endian tweak, zero-padded to 16 bytes, encrypted under key 2
        for (let i = 0, w = TWEAKS >>> 2; i < sectors; i++, w += 4, tweak += step) {
          mem32[w] = tweak >>> 0;
          mem32[w + 1] = Math.floor(tweak / 0x1_0000_0000);
          mem32[w + 2] = 0;
          mem32[w + 3] = 0;
        }
        const encTweaks = enc2.update(mem.subarray(TWEAKS, TWEAKS + sectors * 16));
        mem.set(encTweaks, TWEAKS);
        encTweaks.fill(0);
        mem.set(data.subarray(off, off + len), 0);
        xorTweaks(0, TWEAKS, sectors, blocks);
        mem.set(main.update(mem.subarray(0, len)), 0);
        xorTweaks(0, TWEAKS, sectors, blocks);
        data.set(mem.subarray(0, len), off);
      }
    } finally {
      mem.fill(0, 0, Math.min(data.length, CHUNK));
      mem.fill(0, TWEAKS, TWEAKS + MAX_TWEAK_BYTES);
    }
  }
}

/**
 * Encrypts or decrypts `data` in place under `key` once (XtsCipher.inPlace): whole sectors of
 * `sectorSize` bytes; the first sector's tweak is `firstTweak` (in 512-byte units), the next ones
 * step by sectorSize/512. Makes key schedules per call: for many runs under one key, use an XtsCipher.
 */
export function xtsInPlace(
  direction: XtsDirection,
  key: Uint8Array,
  data: Uint8Array,
  sectorSize: number,
  firstTweak: number,
): void {
  const c = new XtsCipher(key);
  try {
    c.inPlace(direction, data, sectorSize, firstTweak);
  } finally {
    c.wipe();
  }
}
