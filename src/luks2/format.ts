// formatLuks2: a new LUKS2 volume in cryptsetup's default layout (16 KiB headers, keyslots from 32 KiB, data at 16 MiB), written whole or not at all.
import { Buffer } from 'node:buffer';
import { randomBytes, randomUUID } from 'node:crypto';
import { link, open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { assertXtsKey, SECTOR_SIZES } from '../crypto/xts.js';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { LABEL_LEN } from './binary-header.js';
import { digestHandler } from './digest-pbkdf2.js';
import { writeHeaders } from './disk.js';
import { keyslotHandler } from './keyslot-luks2.js';
import { digestIterationsFor, kdfJson, keyslotJson, type KdfChoice } from './keyslots.js';
import type { JsonObject } from './metadata.js';
import { areaIo } from './unlock.js';

/** Header copy size (binary header + JSON area), cryptsetup's default. */
export const DEFAULT_HDR_SIZE = 16384;
/** JSON area of each copy: hdr_size - 4096. */
export const DEFAULT_JSON_SIZE = DEFAULT_HDR_SIZE - 4096;
/** Data segment offset for an attached header: 16 MiB. */
export const DEFAULT_DATA_OFFSET = 16 * 1024 * 1024;
/** Keyslots area: from 2 × hdr_size up to the 16 MiB data offset (16744448 bytes). */
export const DEFAULT_KEYSLOTS_SIZE = DEFAULT_DATA_OFFSET - 2 * DEFAULT_HDR_SIZE;
/** First keyslot area: right after both header copies (32 KiB). */
export const FIRST_KEYSLOT_OFFSET = 2 * DEFAULT_HDR_SIZE;
/** AES-256-XTS volume key. */
export const VOLUME_KEY_SIZE = 64;

export interface FormatOptions {
  imagePath: string;
  /** Detached header file: gets all metadata; the data segment starts at offset 0 of imagePath. */
  headerPath?: string;
  /** Bytes of data (a multiple of sectorSize). */
  dataSize: number;
  sectorSize?: 512 | 1024 | 2048 | 4096;
  label?: string;
  /** Exact bytes of the key file. */
  passphrase: Uint8Array;
  /** PBKDF2-SHA256 iterations for keyslot 0 (default: benchmarked to iterTimeMs). */
  pbkdf2Iterations?: number;
  /** Target unlock time for the benchmark, default 1000 ms. */
  iterTimeMs?: number;
  /** Another KDF for keyslot 0 (overrides pbkdf2Iterations/iterTimeMs). */
  kdf?: KdfChoice;
  /** Use this volume key instead of a random one (64 bytes, halves differ). */
  volumeKey?: Buffer;
  /** A token (e.g. atrest-platform) written as token 0, linked to keyslot 0. */
  token?: JsonObject;
  /**
   * With headerPath: the image already exists and is left alone (in-place conversion); the data
   * segment starts at `dataOffset` of it (default 0).
   */
  existingImage?: boolean;
  dataOffset?: number;
  /** Last changes to the JSON metadata before it is written (conversion requirement and token). */
  mutateJson?: (json: JsonObject) => void;
}

function usage(msg: string, hint?: string): AtrestError {
  return new AtrestError('USAGE', msg, hint === undefined ? {} : { hint });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return false;
    throw fromSystemError(err, path, 'file');
  }
}

function fileExists(path: string): AtrestError {
  return new AtrestError('FILE_EXISTS', `${path} already exists; refusing to format over it`, {
    path,
    hint: 'choose another path or remove it first',
  });
}

function newVolumeKey(given: Buffer | undefined): Buffer {
  if (given !== undefined) {
    // atrest opens AES-128-XTS volumes but only ever creates AES-256-XTS ones
    if (given.length !== VOLUME_KEY_SIZE) {
      throw new AtrestError(
        'UNSUPPORTED',
        `atrest formats AES-256-XTS volumes only: the volume key must be ${VOLUME_KEY_SIZE * 8} bits, got ${given.length * 8}`,
      );
    }
    assertXtsKey(given);
    return Buffer.from(given);
  }
  for (;;) {
    const key = randomBytes(VOLUME_KEY_SIZE);
    if (!key.subarray(0, 32).equals(key.subarray(32))) return key;
    key.fill(0);
  }
}

/** Creates `final` atomically from a temp file written by `fill`; never replaces an existing file. */
async function createAtomically(
  final: string,
  size: number,
  fill: (fh: FileHandle) => Promise<void>,
): Promise<void> {
  const tmp = join(dirname(final), `.${basename(final)}.atrest-${randomBytes(6).toString('hex')}.tmp`);
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, 'wx', 0o600);
    await fh.truncate(size);
    await fill(fh);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await link(tmp, final).catch((err: unknown) => {
      if ((err as { code?: unknown }).code === 'EEXIST') throw fileExists(final);
      throw err;
    });
    const d = await open(dirname(final), 'r');
    await d.sync().finally(() => d.close());
  } catch (err) {
    throw fromSystemError(err, final, 'image');
  } finally {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Formats a new LUKS2 volume: aes-xts-plain64 with a 512-bit key, one keyslot (0) with PBKDF2-SHA256,
 * a pbkdf2 digest, segment size "dynamic". Creates imagePath (refuses if it exists: FILE_EXISTS) sized
 * to dataOffset + dataSize, sparse; with headerPath, creates that too and puts the data at offset 0.
 */
export async function formatLuks2(opts: FormatOptions): Promise<{ uuid: string; keyslot: number }> {
  const sectorSize = opts.sectorSize ?? 4096;
  if (!SECTOR_SIZES.includes(sectorSize)) {
    throw usage(`sector size ${String(sectorSize)} is not 512, 1024, 2048 or 4096`);
  }
  const { dataSize } = opts;
  if (!Number.isSafeInteger(dataSize) || dataSize <= 0 || dataSize % sectorSize !== 0) {
    throw usage(`data size ${String(dataSize)} is not a positive multiple of the sector size ${sectorSize}`);
  }
  const label = opts.label ?? '';
  if (Buffer.byteLength(label, 'utf8') > LABEL_LEN - 1 || label.includes('\0')) {
    throw usage(`label is longer than ${LABEL_LEN - 1} bytes`, 'use a shorter label');
  }
  if (!(opts.passphrase instanceof Uint8Array) || opts.passphrase.length === 0) {
    throw usage('the key file is empty', 'use a key file with at least one byte');
  }
  const detached = opts.headerPath !== undefined;
  const headerPath = opts.headerPath ?? opts.imagePath;
  if (detached && headerPath === opts.imagePath)
    throw usage('the detached header must be another file than the image');
  if (opts.existingImage === true && !detached) throw usage('existingImage needs a detached header file');
  for (const p of detached
    ? opts.existingImage === true
      ? [headerPath]
      : [opts.imagePath, headerPath]
    : [opts.imagePath]) {
    if (await exists(p)) throw fileExists(p);
  }

  const volumeKey = newVolumeKey(opts.volumeKey);
  try {
    const choice: KdfChoice =
      opts.kdf ??
      (opts.pbkdf2Iterations !== undefined
        ? { type: 'pbkdf2', iterations: opts.pbkdf2Iterations }
        : { type: 'pbkdf2', iterTimeMs: opts.iterTimeMs ?? 1000 });
    const kdf = await kdfJson(choice, VOLUME_KEY_SIZE);
    const keyslot = keyslotJson(VOLUME_KEY_SIZE, FIRST_KEYSLOT_OFFSET, kdf);
    const digestIter = digestIterationsFor(choice, typeof kdf.iterations === 'number' ? kdf.iterations : 0);
    const dh = digestHandler('pbkdf2');
    const kh = keyslotHandler('luks2');
    if (!dh || !kh) throw new AtrestError('INTERNAL', 'LUKS2 handlers missing');
    const digest = await dh.create(volumeKey, digestIter, 'sha256');
    digest.keyslots = ['0'];
    digest.segments = ['0'];
    const dataOffset = detached ? (opts.dataOffset ?? 0) : DEFAULT_DATA_OFFSET;
    const json: JsonObject = {
      keyslots: { '0': keyslot },
      tokens: opts.token === undefined ? {} : { '0': { ...structuredClone(opts.token), keyslots: ['0'] } },
      segments: {
        '0': {
          type: 'crypt',
          offset: String(dataOffset),
          size: 'dynamic',
          iv_tweak: '0',
          encryption: 'aes-xts-plain64',
          sector_size: sectorSize,
        },
      },
      digests: { '0': digest },
      config: { json_size: String(DEFAULT_JSON_SIZE), keyslots_size: String(DEFAULT_KEYSLOTS_SIZE) },
    };
    opts.mutateJson?.(json);
    const uuid = randomUUID();
    const writeHeader = async (fh: FileHandle): Promise<void> => {
      await kh.setKey(keyslot, opts.passphrase, volumeKey, areaIo(fh, headerPath));
      await writeHeaders(fh, {
        hdrSize: DEFAULT_HDR_SIZE,
        seqid: 1n,
        label,
        subsystem: '',
        uuid,
        checksumAlg: 'sha256',
        salts: { primary: null, secondary: null },
        json,
        jsonSize: DEFAULT_JSON_SIZE,
      });
    };
    if (!detached) {
      await createAtomically(opts.imagePath, DEFAULT_DATA_OFFSET + dataSize, writeHeader);
    } else if (opts.existingImage === true) {
      await createAtomically(headerPath, DEFAULT_DATA_OFFSET, writeHeader);
    } else {
      let createdImage = false;
      try {
        const fh = await open(opts.imagePath, 'wx', 0o600).catch((err: unknown) => {
          throw fromSystemError(err, opts.imagePath, 'image');
        });
        createdImage = true;
        try {
          await fh.truncate(dataSize);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await createAtomically(headerPath, DEFAULT_DATA_OFFSET, writeHeader);
      } catch (err) {
        if (createdImage) await unlink(opts.imagePath).catch(() => undefined);
        throw err;
      }
    }
    return { uuid, keyslot: 0 };
  } finally {
    volumeKey.fill(0);
  }
}
