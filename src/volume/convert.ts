// In-place conversion of an image (plaintext -> LUKS2 "encrypt", old key -> new key "reencrypt"): backward in batches, crash-safe, online.
//
// Layout. The plaintext view has `size` bytes. Unconverted data lives in the *source* layout (offset S
// of the image; plaintext, or the old key), converted data in the *target* layout (offset T, new key).
// The conversion walks backward: `front` starts at `size`; [front, size) is converted, [0, front) is not.
//
// Resilience (the record of progress lives in an area of the LUKS2 header file, two alternating 4 KiB
// slots with a sequence number and a SHA-256 over each, so a torn record write falls back to the other):
// - datashift (encrypt with an attached header, T = S + 16 MiB > S): a batch of at most T - S bytes is
//   read from the source and written to the target, which never overlaps the source of the batch or of
//   anything below it. Ordering is the whole protocol: data written, data fdatasync'd, then the record
//   {front: batch start} written and fsync'd, and only then the batch is released to foreground I/O.
//   A crash at any instant finds the batch's source intact: it is redone from there.
// - checksum (same offsets: detached header, reencrypt): with the batch's range locked (no user write
//   can land in it until the batch is durable) the image is fdatasync'd, so users' earlier writes there
//   are on the disk and not only in the page cache; then the SHA-256 of every source sector as read
//   now (= as on the disk) goes to the area and the record says {front, hot zone, digest of the sums};
//   both are fsync'd before the first data write; the data is fdatasync'd before the range is released
//   and before the next record. Recovery rereads the hot zone: a sector whose hash
//   matches its source sum is still unconverted and is converted; any other sector already holds the
//   target (converted, or written since by the user). Sums are per encryption sector, the unit a disk
//   writes atomically. A record whose sums do not match their digest was never followed by data writes.
//
// While it runs, the LUKS2 header carries CONVERT_REQUIREMENT (cryptsetup refuses the image) and an
// `atrest-convert` token with the plan. With an attached header, the header lives in a sidecar file
// (IMAGE.atrest-convert.hdr) until the end, when it is copied to the first 16 MiB of the image (free
// by then) and the mark, token and sidecar go.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SECTOR_SIZES, TWEAK_UNIT } from '../crypto/xts.js';
import { AtrestError, fromSystemError, isAtrestError } from '../errors/index.js';
import {
  CONVERT_REQUIREMENT,
  DEFAULT_DATA_OFFSET,
  LUKS2_MAGIC_PRIMARY,
  readLuks2,
  withMetadataLock,
  writeMetadata,
  type JsonObject,
  type Luks2Metadata,
} from '../luks2/index.js';
import type { SectorCipher } from './cipher.js';
import { checkSidecarIdentity, sameSidecar, trustedSidecar } from './sidecar.js';
import type { Volume } from './volume.js';
import { YieldController, type YieldPolicy } from './yield-controller.js';
import { DurableWriter } from './durable-write.js';
import { writeImage } from './image-write.js';

/** What the converter needs of the online volume: its range locks, its front, its foreground counters. */
export type ConversionHost = Pick<Volume, 'foreground' | 'lockRange' | 'setConversionFront'>;

export const CONVERT_TOKEN = 'atrest-convert';
export const SIDECAR_SUFFIX = '.atrest-convert.hdr';
/**
 * Datashift batches bypass the page cache only when the shift leaves this much room between the end of
 * the batch's source and its target: more than any readahead window, so no read pulls the target range
 * into the page cache while the batch writes it directly.
 */
const READAHEAD_MARGIN = 8 * 1024 * 1024;
/** Bytes converted per batch (and per checkpoint). */
export const DEFAULT_BATCH_BYTES = 8 * 1024 * 1024;
const RECORD_BYTES = 4096;
const RECORD_MAGIC = Buffer.from('ATRCONV1', 'latin1');
const SUM_BYTES = 32;
/** Bytes of one sums slot: one SHA-256 per source sector of a batch (512-byte sectors: the worst case). */
const SUMS_SLOT_BYTES = (DEFAULT_BATCH_BYTES / 512) * SUM_BYTES;
/**
 * The record area: two record slots, then two sums slots. Record seq N lives in slot N % 2 and its
 * sums in sums slot N % 2, so arming the next batch never overwrites the sums of the newest record.
 */
export const AREA_BYTES = 2 * RECORD_BYTES + 2 * SUMS_SLOT_BYTES;
/** Where the area goes in a header made for a conversion: after keyslot 0 (32 KiB + 252 KiB). */
export const AREA_OFFSET = 32768 + 258048;

export type ConvertMode = 'encrypt' | 'reencrypt';
export type Resilience = 'datashift' | 'checksum';

/** The plan, kept in the `atrest-convert` token while the conversion runs. */
export interface ConvertPlan {
  mode: ConvertMode;
  resilience: Resilience;
  /** Bytes of plaintext. */
  size: number;
  sectorSize: number;
  sourceOffset: number;
  targetOffset: number;
  /** iv_tweak of the source layout (reencrypt of a volume with a non-zero tweak). */
  sourceIvTweak: number;
  batch: number;
  /** Record area in the header file. */
  area: { offset: number; size: number };
  /** The header is a sidecar file until the end (attached encrypt). */
  sidecar: boolean;
  /** Sidecar: the inode number of the image it belongs to (see checkSidecarIdentity). */
  imageIno?: number;
  /** reencrypt: the old volume key, wrapped under the new one (see wrapOldKey). */
  oldKey?: string;
  /** reencrypt: keyslot areas of the old key, wiped again at the end. */
  oldAreas?: Array<{ offset: number; size: number }>;
}

/** Progress as status shows it. */
export interface ConvertProgress {
  mode: ConvertMode;
  done: number;
  total: number;
  percent: number;
  /** Bytes per second over the last few seconds. */
  rate: number;
  /** Seconds left at that rate, or null. */
  etaSeconds: number | null;
  paused: boolean;
  state: 'running' | 'paused' | 'finishing' | 'done' | 'failed';
  error?: string;
}

// --- file I/O the converter uses (tests substitute a fault-injecting one) ---------------------------

export interface ConvFile {
  /** Reads exactly buf.length bytes at pos (zeros past the end). */
  read(buf: Buffer, pos: number): Promise<void>;
  write(buf: Buffer, pos: number): Promise<void>;
  /**
   * Writes `buf` at `pos` and makes these bytes durable, without flushing the file's other dirty data
   * where the filesystem allows (O_DSYNC; O_DIRECT too when `direct`: the caller guarantees nothing
   * uses that range through the page cache meanwhile). Otherwise write + fdatasync.
   */
  writeDurable(buf: Buffer, pos: number, o?: { direct?: boolean }): Promise<void>;
  /** fdatasync. */
  sync(): Promise<void>;
  size(): Promise<number>;
  truncate(size: number): Promise<void>;
  close(): Promise<void>;
}

export interface ConvIo {
  open(path: string): Promise<ConvFile>;
}

class NodeFile implements ConvFile {
  readonly #durable: DurableWriter;
  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
  ) {
    this.#durable = new DurableWriter(fh, path, DEFAULT_BATCH_BYTES / 2);
  }

  writeDurable(buf: Buffer, pos: number, o?: { direct?: boolean }): Promise<void> {
    return this.#durable.write(buf, pos, o);
  }

  async read(buf: Buffer, pos: number): Promise<void> {
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesRead } = await this.fh.read(buf, done, buf.length - done, pos + done);
        if (bytesRead === 0) {
          buf.fill(0, done);
          return;
        }
        done += bytesRead;
      }
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async write(buf: Buffer, pos: number): Promise<void> {
    try {
      await writeImage(this.fh, buf, pos, this.path);
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async sync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  async truncate(size: number): Promise<void> {
    try {
      await this.fh.truncate(size);
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async close(): Promise<void> {
    await this.#durable.close();
    await this.fh.close();
  }
}

/** Real files (fs/promises only: the daemon serving FUSE must never block). */
export const nodeIo: ConvIo = {
  async open(path: string): Promise<ConvFile> {
    try {
      return new NodeFile(await open(path, constants.O_RDWR), path);
    } catch (err) {
      throw fromSystemError(err, path, 'image');
    }
  },
};

// --- the progress record --------------------------------------------------------------------------

export interface ConvertRecord {
  seq: number;
  front: number;
  /** Hot zone armed for checksum recovery, or null. */
  hot: { start: number; end: number; sumsDigest: Buffer } | null;
}

export function encodeRecord(r: ConvertRecord): Buffer {
  const b = Buffer.alloc(RECORD_BYTES);
  RECORD_MAGIC.copy(b, 0);
  b.writeBigUInt64LE(BigInt(r.seq), 8);
  b.writeBigUInt64LE(BigInt(r.front), 16);
  if (r.hot) {
    b.writeBigUInt64LE(BigInt(r.hot.start), 24);
    b.writeBigUInt64LE(BigInt(r.hot.end), 32);
    b[40] = 1;
    r.hot.sumsDigest.copy(b, 41);
  }
  createHash('sha256')
    .update(b.subarray(0, RECORD_BYTES - 32))
    .digest()
    .copy(b, RECORD_BYTES - 32);
  return b;
}

export function decodeRecord(b: Buffer): ConvertRecord | null {
  if (b.length < RECORD_BYTES || !b.subarray(0, 8).equals(RECORD_MAGIC)) return null;
  const sum = createHash('sha256')
    .update(b.subarray(0, RECORD_BYTES - 32))
    .digest();
  if (!sum.equals(b.subarray(RECORD_BYTES - 32, RECORD_BYTES))) return null;
  const num = (o: number): number => Number(b.readBigUInt64LE(o));
  return {
    seq: num(8),
    front: num(16),
    hot: b[40] === 1 ? { start: num(24), end: num(32), sumsDigest: Buffer.from(b.subarray(41, 73)) } : null,
  };
}

/** SHA-256 of each sector of `data`, concatenated. */
export function sectorSums(data: Buffer, sectorSize: number): Buffer {
  const out = Buffer.alloc((data.length / sectorSize) * SUM_BYTES);
  for (let i = 0, o = 0; i < data.length; i += sectorSize, o += SUM_BYTES) {
    createHash('sha256')
      .update(data.subarray(i, i + sectorSize))
      .digest()
      .copy(out, o);
  }
  return out;
}

// --- the plan in the header -----------------------------------------------------------------------

function num(v: unknown, what: string, path: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: conversion plan field ${what} is invalid`, { path });
  }
  return v;
}

/** The plan of a converting header (CORRUPT_HEADER when its token is missing or malformed). */
export function planOf(meta: Luks2Metadata): ConvertPlan {
  const path = meta.headerPath;
  const t = meta.tokens.find((x) => x.type === CONVERT_TOKEN);
  const p = t?.raw.atrest_plan;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: conversion under way but its plan token is missing`, {
      path,
      hint: 'restore the header from a backup',
    });
  }
  const o = p;
  const area = o.area as JsonObject | undefined;
  const mode = o.mode === 'encrypt' || o.mode === 'reencrypt' ? o.mode : null;
  const resilience = o.resilience === 'datashift' || o.resilience === 'checksum' ? o.resilience : null;
  if (mode === null || resilience === null || typeof area !== 'object' || area === null) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: conversion plan is malformed`, { path });
  }
  const plan: ConvertPlan = {
    mode,
    resilience,
    size: num(o.size, 'size', path),
    sectorSize: num(o.sectorSize, 'sectorSize', path),
    sourceOffset: num(o.sourceOffset, 'sourceOffset', path),
    targetOffset: num(o.targetOffset, 'targetOffset', path),
    sourceIvTweak: num(o.sourceIvTweak ?? 0, 'sourceIvTweak', path),
    batch: num(o.batch, 'batch', path),
    area: { offset: num(area.offset, 'area.offset', path), size: num(area.size, 'area.size', path) },
    sidecar: o.sidecar === true,
  };
  if (o.imageIno !== undefined) plan.imageIno = num(o.imageIno, 'imageIno', path);
  if (typeof o.oldKey === 'string') plan.oldKey = o.oldKey;
  if (Array.isArray(o.oldAreas)) {
    plan.oldAreas = o.oldAreas.map((a) => {
      const x = a as JsonObject;
      return { offset: num(x.offset, 'oldAreas.offset', path), size: num(x.size, 'oldAreas.size', path) };
    });
  }
  const ss = plan.sectorSize;
  const sane =
    SECTOR_SIZES.includes(ss) &&
    plan.size % ss === 0 &&
    plan.batch % ss === 0 &&
    plan.batch > 0 &&
    plan.area.size >= 2 * RECORD_BYTES + 2 * SUMS_SLOT_BYTES &&
    (plan.batch / ss) * SUM_BYTES <= SUMS_SLOT_BYTES &&
    (plan.resilience === 'checksum'
      ? plan.sourceOffset === plan.targetOffset
      : plan.targetOffset - plan.sourceOffset >= plan.batch);
  if (!sane) throw new AtrestError('CORRUPT_HEADER', `${path}: conversion plan is inconsistent`, { path });
  return plan;
}

/** The token JSON that carries a plan. */
export function planToken(plan: ConvertPlan): JsonObject {
  const p: JsonObject = {
    mode: plan.mode,
    resilience: plan.resilience,
    size: plan.size,
    sectorSize: plan.sectorSize,
    sourceOffset: plan.sourceOffset,
    targetOffset: plan.targetOffset,
    sourceIvTweak: plan.sourceIvTweak,
    batch: plan.batch,
    area: { offset: plan.area.offset, size: plan.area.size },
    sidecar: plan.sidecar,
  };
  if (plan.imageIno !== undefined) p.imageIno = plan.imageIno;
  if (plan.oldKey !== undefined) p.oldKey = plan.oldKey;
  if (plan.oldAreas !== undefined)
    p.oldAreas = plan.oldAreas.map((a) => ({ offset: a.offset, size: a.size }));
  return { type: CONVERT_TOKEN, keyslots: [], atrest_plan: p };
}

/** Adds the conversion requirement and plan token to a JSON metadata object. */
export function markConverting(json: JsonObject, plan: ConvertPlan): void {
  const config = json.config as JsonObject;
  const req = (config.requirements as JsonObject | undefined) ?? {};
  const mandatory = Array.isArray(req.mandatory) ? (req.mandatory as string[]) : [];
  if (!mandatory.includes(CONVERT_REQUIREMENT)) mandatory.push(CONVERT_REQUIREMENT);
  config.requirements = { ...req, mandatory };
  const tokens = json.tokens as JsonObject;
  let id = 0;
  while (String(id) in tokens) id++;
  tokens[String(id)] = planToken(plan);
}

/** Removes the conversion requirement and plan token. */
export function unmarkConverting(json: JsonObject): void {
  const config = json.config as JsonObject;
  const req = config.requirements as JsonObject | undefined;
  if (req && Array.isArray(req.mandatory)) {
    const rest = (req.mandatory as string[]).filter((r) => r !== CONVERT_REQUIREMENT);
    if (rest.length === 0) delete req.mandatory;
    else req.mandatory = rest;
    if (Object.keys(req).length === 0) delete config.requirements;
  }
  const tokens = json.tokens as Record<string, JsonObject>;
  for (const [id, t] of Object.entries(tokens)) if (t.type === CONVERT_TOKEN) delete tokens[id];
}

// --- the old key of a reencryption -------------------------------------------------------------------

function oldKeyKek(newKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', newKey, Buffer.alloc(0), 'atrest-reencrypt-old-key', 32));
}

/**
 * The old volume key of a reencryption, wrapped (AES-256 KWP) under a key derived from the new one: it
 * stays recoverable for resuming after a crash exactly as long as the plan exists, and never longer.
 */
export function wrapOldKey(newKey: Uint8Array, oldKey: Uint8Array): string {
  const kek = oldKeyKek(newKey);
  try {
    const c = createCipheriv('id-aes256-wrap-pad', kek, Buffer.from('A65959A6', 'hex'));
    return Buffer.concat([c.update(oldKey), c.final()]).toString('base64');
  } finally {
    kek.fill(0);
  }
}

export function unwrapOldKey(newKey: Uint8Array, wrapped: string): Buffer {
  const kek = oldKeyKek(newKey);
  try {
    const d = createDecipheriv('id-aes256-wrap-pad', kek, Buffer.from('A65959A6', 'hex'));
    return Buffer.concat([d.update(Buffer.from(wrapped, 'base64')), d.final()]);
  } catch (err) {
    throw new AtrestError('CORRUPT_HEADER', 'the old key of the reencryption does not unwrap', {
      cause: err,
    });
  } finally {
    kek.fill(0);
  }
}

/**
 * The cipher a Volume uses for the source layout of `plan`: the Volume tweaks from the target's
 * iv_tweak (0), so a source with another iv_tweak needs its tweaks shifted.
 */
export function sourceLayoutCipher(plan: ConvertPlan, source: SectorCipher): SectorCipher {
  return plan.sourceIvTweak === 0 ? source : new ShiftedCipher(source, plan.sourceIvTweak);
}

/** A cipher whose tweaks are shifted (a source layout with another iv_tweak than the target). */
export class ShiftedCipher implements SectorCipher {
  constructor(
    private readonly inner: SectorCipher,
    private readonly delta: number,
  ) {}

  encrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    return this.inner.encrypt(data, sectorSize, firstTweak + this.delta);
  }

  decrypt(data: Buffer, sectorSize: number, firstTweak: number): Promise<Buffer> {
    return this.inner.decrypt(data, sectorSize, firstTweak + this.delta);
  }
}

// --- validation before a conversion starts --------------------------------------------------------

export function sidecarPath(image: string): string {
  return `${image}${SIDECAR_SUFFIX}`;
}

/**
 * Checks that `image` can be encrypted in place and returns the plan (without oldKey). Refuses: not a
 * regular file, read-only, already LUKS2, size not whole sectors, not enough free space for the header.
 */
export async function planEncrypt(
  image: string,
  opts: { sectorSize: number; detachedHeader: boolean; batch?: number },
): Promise<ConvertPlan> {
  const ss = opts.sectorSize;
  let st;
  try {
    st = await stat(image);
  } catch (err) {
    throw fromSystemError(err, image, 'image');
  }
  if (!st.isFile()) throw new AtrestError('USAGE', `${image} is not a regular file`, { path: image });
  try {
    const fh = await open(image, 'r+');
    await fh.close();
  } catch (err) {
    const e = fromSystemError(err, image, 'image');
    if ((err as { code?: unknown }).code === 'EACCES' || (err as { code?: unknown }).code === 'EROFS') {
      throw new AtrestError('READ_ONLY', `${image} is read-only; encrypting it in place needs to write it`, {
        path: image,
        hint: 'make it writable (chmod u+w, or remount read-write) first',
      });
    }
    throw e;
  }
  const head = Buffer.alloc(6);
  const fh = await open(image, 'r');
  try {
    await fh.read(head, 0, 6, 0);
  } finally {
    await fh.close();
  }
  if (head.equals(LUKS2_MAGIC_PRIMARY)) {
    throw new AtrestError('USAGE', `${image} is already a LUKS volume`, {
      path: image,
      hint: 'to move it to a new volume key use `atrest reencrypt`; to open it use `atrest open`',
    });
  }
  if (st.size === 0 || st.size % ss !== 0) {
    const works = SECTOR_SIZES.filter((s) => st.size > 0 && st.size % s === 0);
    throw new AtrestError('USAGE', `${image} is ${st.size} bytes, not a whole number of ${ss}-byte sectors`, {
      path: image,
      hint:
        works.length > 0
          ? `use --sector-size ${works[works.length - 1]} (sizes that divide it: ${works.join(', ')})`
          : 'grow it to a multiple of 512 bytes first (truncate -s)',
    });
  }
  const batch = Math.min(opts.batch ?? DEFAULT_BATCH_BYTES, DEFAULT_BATCH_BYTES);
  const shift = opts.detachedHeader ? 0 : DEFAULT_DATA_OFFSET;
  // room: the header (sidecar now, in the image later) plus the image growing by the shift
  const need = DEFAULT_DATA_OFFSET + shift;
  const fs = await statfs(dirname(image)).catch(() => null);
  if (fs !== null && fs.bavail * fs.bsize < need) {
    throw new AtrestError(
      'NO_SPACE',
      `not enough free space next to ${image}: encrypting in place needs ${need} bytes, ${fs.bavail * fs.bsize} are free`,
      { path: image, hint: 'free some space on that filesystem first' },
    );
  }
  return {
    mode: 'encrypt',
    resilience: opts.detachedHeader ? 'checksum' : 'datashift',
    size: st.size,
    sectorSize: ss,
    sourceOffset: 0,
    targetOffset: shift,
    sourceIvTweak: 0,
    batch,
    area: { offset: AREA_OFFSET, size: AREA_BYTES },
    sidecar: !opts.detachedHeader,
    ...(opts.detachedHeader ? {} : { imageIno: st.ino }),
  };
}

// --- the converter ----------------------------------------------------------------------------------

export interface ConverterOptions {
  image: string;
  /** The header file: the sidecar, a detached header, or the image itself. */
  header: string;
  plan: ConvertPlan;
  /** New key (target) and what the source is (PlainCipher for plaintext, or the old key). */
  target: SectorCipher;
  source: SectorCipher;
  io?: ConvIo;
  /** Online: take batches from the volume's range locks and move its front. */
  volume?: ConversionHost;
  /**
   * Bytes per second (0 or absent: unlimited): a cap on top of the adaptive yielding to foreground
   * I/O (yield-controller.ts) an online conversion always does.
   */
  maxRate?: number;
  /** Online: overrides of the yielding policy (tests, benchmarks); see yield-controller.ts. */
  yieldPolicy?: Partial<Omit<YieldPolicy, 'maxBatch' | 'align'>>;
  /** Time (ms, monotonic) and sleeping, for tests; default performance.now and setTimeout. */
  clock?: { now(): number; sleep(ms: number): Promise<void> };
  /** Test hook: called at named points; tests SIGKILL the process there. */
  killPoint?: (name: string) => void;
  onProgress?: (p: ConvertProgress) => void;
  /** Finalize the header after the last batch (default true; tests of the batch loop turn it off). */
  finalize?: boolean;
}

/** Reads the newest valid record from the area; fresh conversions have none (front = size). */
async function readRecord(header: ConvFile, plan: ConvertPlan): Promise<ConvertRecord> {
  const buf = Buffer.alloc(2 * RECORD_BYTES);
  await header.read(buf, plan.area.offset);
  const a = decodeRecord(buf.subarray(0, RECORD_BYTES));
  const b = decodeRecord(buf.subarray(RECORD_BYTES));
  const best = [a, b].filter((r): r is ConvertRecord => r !== null).sort((x, y) => y.seq - x.seq)[0];
  return best ?? { seq: 0, front: plan.size, hot: null };
}

export class Converter {
  readonly plan: ConvertPlan;
  #front: number;
  #seq = 0;
  #paused = false;
  #resume: (() => void) | null = null;
  #state: ConvertProgress['state'] = 'running';
  #error: string | undefined;
  #rateWindow: Array<{ t: number; done: number }> = [];
  #stopped = false;
  #files: { image: ConvFile; header: ConvFile } | null = null;
  #volume: ConversionHost | undefined;
  /** Ends the current pause between batches early (pause, stop). */
  #wake: (() => void) | null = null;

  constructor(private readonly o: ConverterOptions) {
    this.plan = o.plan;
    this.#front = o.plan.size;
    this.#volume = o.volume;
  }

  /**
   * Opens the files, reads the newest record, grows the image for the target layout and finishes an
   * interrupted hot zone. Returns the front: serve [0, front) from the source layout, the rest from the
   * target. run() calls it when it was not called before.
   */
  async prepare(): Promise<number> {
    const io = this.o.io ?? nodeIo;
    const { plan } = this;
    const image = await io.open(this.o.image);
    const header = this.o.header === this.o.image ? image : await io.open(this.o.header);
    this.#files = { image, header };
    try {
      const rec = await readRecord(header, plan);
      this.#seq = rec.seq;
      this.#front = rec.front;
      if ((await image.size()) < plan.targetOffset + plan.size) {
        await image.truncate(plan.targetOffset + plan.size);
        await image.sync();
        this.#kill('after-grow');
      }
      if (rec.hot !== null) await this.#recoverHot(image, header, rec.hot);
      return this.#front;
    } catch (err) {
      await this.#closeFiles();
      throw err;
    }
  }

  /** Serves I/O through this volume from now on (its range locks and front). */
  attach(volume: ConversionHost): void {
    this.#volume = volume;
  }

  async #closeFiles(): Promise<void> {
    const f = this.#files;
    this.#files = null;
    if (f === null) return;
    if (f.header !== f.image) await f.header.close().catch(() => undefined);
    await f.image.close().catch(() => undefined);
  }

  get front(): number {
    return this.#front;
  }

  pause(): void {
    this.#paused = true;
    this.#wake?.();
  }

  resume(): void {
    this.#paused = false;
    const r = this.#resume;
    this.#resume = null;
    r?.();
  }

  /** Stops at the next batch boundary (the daemon closing the volume); run() then resolves. */
  stop(): void {
    this.#stopped = true;
    this.#wake?.();
    this.resume();
  }

  /** Sleeps `ms` (the clock's sleep), or less when pause() or stop() is called meanwhile. */
  async #sleep(ms: number): Promise<void> {
    if (!(ms > 0) || this.#stopped || this.#paused) return;
    const woken = new Promise<void>((r) => (this.#wake = r));
    const sleep = this.o.clock ? this.o.clock.sleep(ms) : new Promise((r) => setTimeout(r, ms));
    await Promise.race([woken, sleep]);
    this.#wake = null;
  }

  progress(): ConvertProgress {
    const total = this.plan.size;
    const done = total - this.#front;
    const w = this.#rateWindow;
    const first = w[0];
    const last = w[w.length - 1];
    const rate =
      first && last && last.t > first.t
        ? Math.round(((last.done - first.done) * 1000) / (last.t - first.t))
        : 0;
    const p: ConvertProgress = {
      mode: this.plan.mode,
      done,
      total,
      percent: total === 0 ? 100 : Math.floor((done * 1000) / total) / 10,
      rate,
      etaSeconds: rate > 0 ? Math.ceil((total - done) / rate) : null,
      paused: this.#paused,
      state: this.#paused && this.#state === 'running' ? 'paused' : this.#state,
    };
    if (this.#error !== undefined) p.error = this.#error;
    return p;
  }

  #kill(name: string): void {
    this.o.killPoint?.(name);
  }

  #tweak(pos: number, ivTweak: number): number {
    return pos / TWEAK_UNIT + ivTweak;
  }

  #note(): void {
    const now = Date.now();
    this.#rateWindow.push({ t: now, done: this.plan.size - this.#front });
    while (this.#rateWindow.length > 2 && now - (this.#rateWindow[0]?.t ?? now) > 5000)
      this.#rateWindow.shift();
    this.o.onProgress?.(this.progress());
  }

  /**
   * Runs (or resumes) the conversion to the end, then finalizes the header. Resolves early (without
   * finalizing) after stop(). Safe to call again after a crash: everything is derived from the disk.
   */
  async run(): Promise<boolean> {
    const { plan } = this;
    try {
      if (this.#files === null) await this.prepare();
      const files = this.#files;
      if (files === null) throw new AtrestError('INTERNAL', 'conversion files not open');
      const { image, header } = files;
      this.#volume?.setConversionFront(this.#front);
      this.#note();
      const now = (): number => (this.o.clock ? this.o.clock.now() : performance.now());
      // Online, foreground I/O comes first: the controller sizes each batch and the pause after it from
      // the volume's foreground counters (latency and throughput while converting vs while pausing).
      const host = this.#volume;
      const yielder =
        host === undefined
          ? null
          : new YieldController({ ...this.o.yieldPolicy, maxBatch: plan.batch, align: plan.sectorSize });
      let lastT = now();
      let sinceT = 0;
      while (this.#front > 0) {
        if (this.#paused) {
          this.#state = 'paused';
          await new Promise<void>((r) => (this.#resume = r));
          this.#state = 'running';
          lastT = now();
          sinceT = 0;
        }
        if (this.#stopped) return false;
        const bytes = yielder && host ? yielder.beginBatch(host.foreground(), now()) : plan.batch;
        const start = Math.max(0, this.#front - bytes);
        sinceT += this.#front - start;
        await this.#batch(image, header, start, this.#front);
        let pause = yielder && host ? yielder.endBatch(host.foreground(), now()) : 0;
        this.#note();
        if (yielder && host && pause > 0 && this.#front > 0) {
          // the requests the batch held up drain first: they count against it, not the baseline
          await this.#sleep(Math.min(pause / 2, yielder.policy.settleMs));
          pause = yielder.settled(host.foreground(), now());
        }
        // the user's cap: keep the average since the last pause at or under maxRate
        const rate = this.o.maxRate ?? 0;
        const wait = rate > 0 ? lastT + (sinceT * 1000) / rate - now() : 0;
        if (this.#front > 0) await this.#sleep(Math.max(pause, wait));
      }
      if (plan.resilience === 'checksum') {
        await this.#writeRecord(header, { seq: this.#seq + 1, front: 0, hot: null });
        this.#kill('after-final-record');
      }
    } catch (err) {
      this.#state = 'failed';
      this.#error = isAtrestError(err) ? err.oneLine() : String(err);
      throw err;
    } finally {
      await this.#closeFiles();
    }
    if (this.o.finalize === false) return true;
    this.#state = 'finishing';
    await finalizeConversion(this.o.image, this.o.header, plan, (n) => this.#kill(n));
    this.#volume?.setConversionFront(0);
    this.#state = 'done';
    this.#note();
    return true;
  }

  #sumsOffset(seq: number): number {
    return this.plan.area.offset + 2 * RECORD_BYTES + (seq % 2) * SUMS_SLOT_BYTES;
  }

  async #writeRecord(header: ConvFile, r: ConvertRecord): Promise<void> {
    const slot = r.seq % 2;
    // durable on return (O_DSYNC): with an attached header, an fdatasync here would also write back
    // every page the user dirtied since the last batch
    await header.writeDurable(encodeRecord(r), this.plan.area.offset + slot * RECORD_BYTES);
    this.#kill('record-written');
    this.#seq = r.seq;
  }

  /** Converts [start, end) of the plaintext view. */
  async #batch(image: ConvFile, header: ConvFile, start: number, end: number): Promise<void> {
    const { plan } = this;
    const ss = plan.sectorSize;
    const release = this.#volume ? await this.#volume.lockRange(start, end) : (): void => undefined;
    try {
      if (plan.resilience === 'checksum') {
        // The sums must describe what is on the disk, not what is in the page cache: a user's write to
        // this range that is not yet durable (none can start now: the range is locked) would be hashed,
        // lost in a power loss, and the old data it covered then taken for converted. So the image
        // data the batch covers is made durable before it is read and hashed.
        await image.sync();
        this.#kill('before-hash');
      }
      const raw = Buffer.alloc(end - start);
      await image.read(raw, plan.sourceOffset + start);
      if (plan.resilience === 'checksum') {
        const sums = sectorSums(raw, ss);
        const seq = this.#seq + 1;
        // durable before the record that names them: the record's digest then always finds them
        await header.writeDurable(sums, this.#sumsOffset(seq));
        this.#kill('sums-written');
        const digest = createHash('sha256').update(sums).digest();
        await this.#writeRecord(header, {
          seq,
          front: this.#front,
          hot: { start, end, sumsDigest: digest },
        });
        this.#kill('after-arm');
      }
      const plain = await this.o.source.decrypt(raw, ss, this.#tweak(start, plan.sourceIvTweak));
      const enc = await this.o.target.encrypt(plain, ss, this.#tweak(start, 0));
      this.#kill('before-data-write');
      const half = Math.floor(enc.length / ss / 2) * ss;
      if (
        plan.resilience === 'datashift' &&
        plan.targetOffset - plan.sourceOffset >= plan.batch + READAHEAD_MARGIN
      ) {
        // Durable per write, straight to the device (O_DIRECT|O_DSYNC): no fdatasync of the whole image,
        // which would also write back every page the user dirtied since the last batch. Nothing else
        // touches the target range through the page cache: the batch holds its range lock, foreground
        // I/O reaches the target layout only above it, and no readahead spans the rest of the shift.
        await image.writeDurable(enc.subarray(0, half), plan.targetOffset + start, { direct: true });
        this.#kill('mid-data-write');
        await image.writeDurable(enc.subarray(half), plan.targetOffset + start + half, { direct: true });
        this.#kill('after-data-write');
      } else {
        // same offsets: readahead of a user's read just below the batch can reach it, so no O_DIRECT
        await image.write(enc.subarray(0, half), plan.targetOffset + start);
        this.#kill('mid-data-write');
        await image.write(enc.subarray(half), plan.targetOffset + start + half);
        this.#kill('after-data-write');
        await image.sync();
      }
      this.#kill('after-data-sync');
      if (plan.resilience === 'datashift') {
        await this.#writeRecord(header, { seq: this.#seq + 1, front: start, hot: null });
        this.#kill('after-checkpoint');
      }
      plain.fill(0);
      this.#front = start;
      this.#volume?.setConversionFront(start);
    } finally {
      release();
    }
  }

  /** Checksum-mode recovery of an armed hot zone (see the top of this file). */
  async #recoverHot(
    image: ConvFile,
    header: ConvFile,
    hot: { start: number; end: number; sumsDigest: Buffer },
  ): Promise<void> {
    const { plan } = this;
    const ss = plan.sectorSize;
    const n = (hot.end - hot.start) / ss;
    const sums = Buffer.alloc(n * SUM_BYTES);
    await header.read(sums, this.#sumsOffset(this.#seq));
    if (!createHash('sha256').update(sums).digest().equals(hot.sumsDigest)) {
      return; // the arming never completed, so no data write followed: the zone is intact source
    }
    const raw = Buffer.alloc(hot.end - hot.start);
    await image.read(raw, plan.sourceOffset + hot.start);
    const now = sectorSums(raw, ss);
    for (let i = 0; i < n; i++) {
      const pos = hot.start + i * ss;
      if (
        !now
          .subarray(i * SUM_BYTES, (i + 1) * SUM_BYTES)
          .equals(sums.subarray(i * SUM_BYTES, (i + 1) * SUM_BYTES))
      )
        continue; // already the target
      const sector = Buffer.from(raw.subarray(i * ss, (i + 1) * ss));
      const plain = await this.o.source.decrypt(sector, ss, this.#tweak(pos, plan.sourceIvTweak));
      const enc = await this.o.target.encrypt(plain, ss, this.#tweak(pos, 0));
      await image.write(enc, plan.targetOffset + pos);
      plain.fill(0);
    }
    await image.sync();
    this.#kill('after-recovery');
    await this.#writeRecord(header, { seq: this.#seq + 1, front: hot.start, hot: null });
    this.#front = hot.start;
  }
}

/** Grows the image to hold the target layout (datashift); idempotent. Before serving it online. */
export async function growForConversion(image: string, plan: ConvertPlan): Promise<void> {
  const need = plan.targetOffset + plan.size;
  const fh = await open(image, 'r+').catch((err: unknown) => {
    throw fromSystemError(err, image, 'image');
  });
  try {
    if ((await fh.stat()).size < need) {
      await fh.truncate(need);
      await fh.datasync();
    }
  } finally {
    await fh.close();
  }
}

/**
 * Ends a conversion whose data is all converted: (sidecar) copy the header into the image's first
 * 16 MiB; then drop the mark and the plan token; wipe the record area; remove the sidecar. Every step
 * is idempotent, so a crash anywhere here is finished by the next run.
 */
export async function finalizeConversion(
  image: string,
  header: string,
  plan: ConvertPlan,
  kill: (name: string) => void = () => undefined,
): Promise<void> {
  // One write pass, one sync: the sums hash source sectors (plaintext, for encrypt) and go before the
  // plan does; a reencryption's old keyslot areas are overwritten once more (idempotent after a crash).
  // The records stay (numbers only) until the area is reused, so a crash from here on finds front = 0.
  const wipe = await open(header, 'r+');
  try {
    const sums = plan.area.size - 2 * RECORD_BYTES;
    await wipe.write(Buffer.alloc(sums), 0, sums, plan.area.offset + 2 * RECORD_BYTES);
    for (const a of plan.oldAreas ?? []) await wipe.write(randomBytes(a.size), 0, a.size, a.offset);
    await wipe.sync();
  } finally {
    await wipe.close();
  }
  kill('sums-wiped');
  let finalHeader = header;
  if (plan.sidecar) {
    const src = await open(header, 'r');
    const dst = await open(image, 'r+');
    try {
      const buf = Buffer.alloc(DEFAULT_DATA_OFFSET);
      await src.read(buf, 0, buf.length, 0);
      buf.fill(0, plan.area.offset + 2 * RECORD_BYTES, plan.area.offset + plan.area.size);
      await dst.write(buf, 0, buf.length, 0);
      kill('header-copied');
      await dst.sync();
    } finally {
      await src.close();
      await dst.close();
    }
    finalHeader = image;
    kill('header-synced');
  }
  await withMetadataLock(finalHeader, async () => {
    const meta = await readLuks2(finalHeader, { imagePath: image });
    if (meta.converting) {
      const json = structuredClone(meta.json);
      unmarkConverting(json);
      await writeMetadata(meta, json);
      kill('unmarked');
    }
  });
  if (plan.sidecar) {
    await unlink(header).catch((err: unknown) => {
      if ((err as { code?: unknown }).code !== 'ENOENT') throw fromSystemError(err, header, 'header');
    });
    const d = await open(dirname(image), 'r');
    await d.sync().finally(() => d.close());
    kill('sidecar-removed');
  }
}

/**
 * Whether the header of a finished LUKS2 volume still holds the progress records of the in-place
 * conversion that made it (the run was interrupted after its very last step that mattered).
 */
export async function finishedConversion(header: string): Promise<boolean> {
  const fh = await open(header, 'r').catch(() => null);
  if (fh === null) return false;
  try {
    const buf = Buffer.alloc(2 * RECORD_BYTES);
    await fh.read(buf, 0, buf.length, AREA_OFFSET);
    const recs = [decodeRecord(buf.subarray(0, RECORD_BYTES)), decodeRecord(buf.subarray(RECORD_BYTES))];
    return recs.some((r) => r !== null && r.front === 0);
  } finally {
    await fh.close();
  }
}

/**
 * Where an image's conversion state is, if any: the sidecar (attached encrypt under way), or a
 * converting header (detached, or reencrypt). A sidecar left behind after the image header was
 * finalized is removed here.
 */
export async function findConversion(
  image: string,
  header: string | undefined,
): Promise<{ header: string; meta: Luks2Metadata; plan: ConvertPlan } | null> {
  if (header === undefined) {
    const side = sidecarPath(image);
    // only a sidecar root made and alone can change is used, and only for the image its plan names
    const st = await trustedSidecar(side);
    if (st !== null) {
      const sideMeta = await readLuks2(side, { imagePath: image });
      await sameSidecar(side, st);
      // finished but not cleaned up? the image then starts with the final header of the same volume
      const own = await readLuks2(image).catch(() => null);
      if (own !== null && own.uuid === sideMeta.uuid && !own.converting) {
        await unlink(side).catch(() => undefined);
        return null;
      }
      const plan = planOf(sideMeta);
      await checkSidecarIdentity(side, image, plan);
      return { header: side, meta: sideMeta, plan };
    }
  }
  const h = header ?? image;
  let meta: Luks2Metadata;
  try {
    meta = await readLuks2(h, { imagePath: image });
  } catch (err) {
    if (isAtrestError(err) && err.code === 'NOT_LUKS2') return null;
    // a detached header not written yet: nothing started
    if (isAtrestError(err) && err.code === 'FILE_NOT_FOUND' && header !== undefined) return null;
    throw err;
  }
  if (!meta.converting) return null;
  return { header: h, meta, plan: planOf(meta) };
}

/**
 * The operator's confirmation that IMAGE's sidecar belongs to it after the image was copied or
 * restored together with it (a new inode): the sidecar's plan is rebound to the image as it is now.
 * The sidecar must still pass the ownership and mode checks.
 */
export async function adoptSidecar(image: string): Promise<void> {
  const side = sidecarPath(image);
  const st = await trustedSidecar(side);
  if (st === null) {
    throw new AtrestError('FILE_NOT_FOUND', `${image} has no sidecar ${side} to adopt`, { path: side });
  }
  const meta = await readLuks2(side, { imagePath: image });
  await sameSidecar(side, st);
  const plan = planOf(meta);
  if (!plan.sidecar) {
    throw new AtrestError('CORRUPT_HEADER', `${side} is not the sidecar of an attached-header encryption`, {
      path: side,
    });
  }
  const ino = (await stat(image)).ino;
  await checkSidecarIdentity(side, image, { ...plan, imageIno: ino });
  const json = structuredClone(meta.json);
  const tokens = json.tokens as Record<string, JsonObject>;
  for (const t of Object.values(tokens)) {
    if (t.type === CONVERT_TOKEN) (t.atrest_plan as JsonObject).imageIno = ino;
  }
  await writeMetadata(meta, json);
}

/** What creating a conversion's header needs (the caller picks the key: platform, KEK, passphrase). */
export interface HeaderRequest {
  imagePath: string;
  headerPath: string;
  existingImage: true;
  dataOffset: number;
  dataSize: number;
  sectorSize: 512 | 1024 | 2048 | 4096;
  mutateJson: (json: JsonObject) => void;
}

/**
 * Starts encrypting `image` in place: validates it, then creates the header (sidecar, or the detached
 * `header` file) with the conversion mark and plan. Nothing in the image changes yet; run a Converter.
 */
export async function startEncrypt(
  image: string,
  opts: {
    header?: string;
    sectorSize: 512 | 1024 | 2048 | 4096;
    batch?: number;
    makeHeader: (req: HeaderRequest) => Promise<void>;
  },
): Promise<{ header: string; plan: ConvertPlan }> {
  const plan = await planEncrypt(image, {
    sectorSize: opts.sectorSize,
    detachedHeader: opts.header !== undefined,
    ...(opts.batch === undefined ? {} : { batch: opts.batch }),
  });
  const header = opts.header ?? sidecarPath(image);
  await opts.makeHeader({
    imagePath: image,
    headerPath: header,
    existingImage: true,
    dataOffset: plan.targetOffset,
    dataSize: plan.size,
    sectorSize: opts.sectorSize,
    mutateJson: (json) => markConverting(json, plan),
  });
  return { header, plan };
}
