// readLuks2 and metadata writes: picks the valid header copy, refuses what atrest cannot serve, and rewrites both copies.
//
// Kept as one file (about 400 lines) on purpose: reading and writing are the two halves of one view.
// Both build the validated Luks2Metadata from a header copy with the same build() and checkSupported()
// (a write re-validates what it writes and refreshes `meta` from it), and the write checks the copy
// the read chose (usedCopy, seqid, damaged). Putting the write apart would need the view's types and
// build() in a third module that both import, which splits the one description of what a valid,
// servable header is across files without making either half simpler. What is a concern of its own
// lives beside it: the binary header (binary-header.ts), both copies on disk (disk.ts), the JSON
// (metadata.ts), layout checks (layout-checks.ts), LUKS remnants in a non-LUKS file (remnants.ts).
import { Buffer } from 'node:buffer';
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { SECTOR_SIZES, XTS_KEY_SIZES } from '../crypto/xts.js';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { digestHandler } from './digest-pbkdf2.js';
import { openFile, readAt, readHeaders, writeHeaders } from './disk.js';
import { withMetadataLock } from './metadata-lock.js';
import { BIN_HEADER_SIZE, decodeBinaryHeader, type BinaryHeader } from './binary-header.js';
import {
  InvalidMetadata,
  parseMetadata,
  type DigestInfo,
  type JsonObject,
  type KeyslotInfo,
  type ParsedMetadata,
  type SegmentInfo,
  type TokenInfo,
} from './metadata.js';
import { checkFits, dataFits, refuseDataOverHeader, refuseForeignSignature } from './layout-checks.js';

/** The parsed, validated view of a LUKS2 volume that openers need. */
export interface Luks2Volume {
  /** File holding the LUKS2 metadata and keyslots. */
  headerPath: string;
  /** File holding the data segment: the same file unless the header is detached. */
  imagePath: string;
  uuid: string;
  label: string;
  subsystem: string;
  cipher: 'aes-xts-plain64';
  /** Bytes of the volume key (64: AES-256-XTS, what atrest creates; 32: AES-128-XTS, opened only). */
  keySize: number;
  sectorSize: number;
  /** Tweak of the first data sector, in 512-byte units (segment iv_tweak). */
  ivTweak: number;
  /** Bytes into imagePath where the data segment starts. */
  dataOffset: number;
  /** Bytes of data, or 'dynamic' = to the end of the image (see resolvedDataSize). */
  dataSize: number | 'dynamic';
  keyslots: KeyslotInfo[];
  tokens: TokenInfo[];
  /** An in-place conversion (atrest encrypt/reencrypt) is under way: see CONVERT_REQUIREMENT. */
  converting: boolean;
}

/** Everything readLuks2 knows; pass it back to unlockVolumeKey, addKeyslot, removeKeyslot. */
export interface Luks2Metadata extends Luks2Volume {
  hdrSize: number;
  seqid: bigint;
  checksumAlg: string;
  jsonSize: number;
  keyslotsSize: number;
  configFlags: string[];
  /** The data segment (id and raw fields). */
  segment: SegmentInfo;
  /** The digest that checks the data segment's volume key. */
  digest: DigestInfo;
  /** Which copy the metadata came from. */
  usedCopy: 'primary' | 'secondary';
  /** Header copies found damaged or stale; the next metadata write rewrites both. */
  damaged: Array<'primary' | 'secondary'>;
  /** Human-readable notes about the read (e.g. "primary header damaged (...), using the secondary"). */
  warnings: string[];
  /** Size of imagePath when read. */
  imageSize: number;
  /** The raw JSON metadata, unknown fields included (rewrites keep them). */
  json: JsonObject;
  /** Salts of the header copies to keep on rewrite (null: regenerate). */
  salts: { primary: Buffer | null; secondary: Buffer | null };
}

/**
 * The LUKS2 mandatory requirement atrest sets while it converts an image in place (encrypt, reencrypt):
 * cryptsetup refuses such a header instead of decrypting plaintext as ciphertext.
 */
export const CONVERT_REQUIREMENT = 'atrest-convert-v1';

function refuse(path: string, code: 'UNSUPPORTED' | 'REENCRYPT_IN_PROGRESS', what: string): AtrestError {
  return new AtrestError(code, `${path}: ${what}`, {
    path,
    hint:
      code === 'REENCRYPT_IN_PROGRESS'
        ? 'finish or roll back the reencryption with cryptsetup first ("cryptsetup reencrypt --resume-only")'
        : 'open this volume with cryptsetup instead',
  });
}

/**
 * Refusals: anything atrest cannot serve correctly. Returns the data segment and its digest.
 */
export function checkSupported(
  path: string,
  json: JsonObject,
  copy: ParsedMetadata,
): {
  segment: SegmentInfo;
  digest: DigestInfo;
} {
  const reenc = copy.config.requirementsMandatory.find((r) => r.startsWith('online-reencrypt'));
  if (reenc !== undefined) {
    return fail('REENCRYPT_IN_PROGRESS', `a reencryption is in progress (requirement ${reenc})`);
  }
  if (copy.keyslots.some((k) => k.type === 'reencrypt')) {
    return fail('REENCRYPT_IN_PROGRESS', 'a reencryption is in progress (reencrypt keyslot)');
  }
  const backup = copy.segments.find((s) => s.flags.some((f) => f.startsWith('backup-')));
  if (backup)
    return fail('REENCRYPT_IN_PROGRESS', `a reencryption is in progress (segment ${backup.id} is a backup)`);
  for (const r of copy.config.requirementsMandatory) {
    const m = /^atrest-convert-v([0-9]+)$/.exec(r);
    if (m !== null && r !== CONVERT_REQUIREMENT) {
      return fail(
        'UNSUPPORTED',
        `an in-place conversion was started by a newer atrest (requirement ${r}); this atrest cannot resume it`,
      );
    }
  }
  const other = copy.config.requirementsMandatory.find((r) => r !== CONVERT_REQUIREMENT);
  if (other !== undefined)
    return fail('UNSUPPORTED', `requires LUKS2 feature "${other}", which atrest does not support`);
  if (copy.segments.length !== 1) {
    return fail('UNSUPPORTED', `has ${copy.segments.length} data segments; atrest supports exactly one`);
  }
  const segment = copy.segments[0] as SegmentInfo;
  if (segment.type !== 'crypt')
    return fail('UNSUPPORTED', `data segment type ${segment.type} is not supported`);
  if (segment.tooLarge !== undefined) {
    return fail('UNSUPPORTED', `${segment.tooLarge} is beyond 2^53 - 1, the largest value atrest supports`);
  }
  if (!SECTOR_SIZES.includes(segment.sectorSize)) {
    return fail(
      'UNSUPPORTED',
      `sector size ${segment.sectorSize} is not supported (512, 1024, 2048 or 4096)`,
    );
  }
  if (segment.integrity)
    return fail('UNSUPPORTED', 'uses dm-integrity (authenticated encryption), which atrest does not support');
  if (segment.encryption !== 'aes-xts-plain64') {
    return fail('UNSUPPORTED', `cipher ${segment.encryption} is not supported (only aes-xts-plain64)`);
  }
  const digest = copy.digests.find((d) => d.segments.includes(segment.id));
  if (!digest) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: no digest checks the data segment's key`, {
      path,
      hint: 'restore the header from a backup',
    });
  }
  const handler = digestHandler(digest.type);
  const rawDigest = (json.digests as Record<string, JsonObject>)[String(digest.id)] as JsonObject;
  let reason: string | null = handler ? null : `digest type ${digest.type} is not supported`;
  if (handler) {
    try {
      reason = handler.check(rawDigest);
    } catch (err) {
      if (!(err instanceof InvalidMetadata)) throw err;
      // cryptsetup loads such a header too, but no key can ever match this digest
      throw new AtrestError('UNSUPPORTED', `${path}: digest ${digest.id} is malformed: ${err.message}`, {
        path,
        hint: 'restore the header from a backup',
      });
    }
  }
  if (reason !== null) return fail('UNSUPPORTED', reason);
  const sizes = new Set(copy.keyslots.filter((k) => digest.keyslots.includes(k.id)).map((k) => k.keySize));
  for (const size of sizes) {
    if (!XTS_KEY_SIZES.includes(size)) {
      return fail(
        'UNSUPPORTED',
        `volume key is ${size * 8} bits; atrest supports aes-xts-plain64 with 256-bit (AES-128-XTS) or 512-bit (AES-256-XTS) keys only`,
      );
    }
  }

  return { segment, digest };

  function fail(code: 'UNSUPPORTED' | 'REENCRYPT_IN_PROGRESS', what: string): never {
    throw refuse(path, code, what);
  }
}

type HeaderFields = Pick<BinaryHeader, 'uuid' | 'label' | 'subsystem' | 'hdrSize' | 'seqid' | 'checksumAlg'>;

function build(
  headerPath: string,
  imagePath: string,
  imageSize: number,
  copy: { bin: HeaderFields; json: JsonObject; parsed: ParsedMetadata },
): Luks2Metadata {
  const { segment, digest } = checkSupported(headerPath, copy.json, copy.parsed);
  const linked = copy.parsed.keyslots.filter((k) => digest.keyslots.includes(k.id));
  return {
    headerPath,
    imagePath,
    uuid: copy.bin.uuid,
    label: copy.bin.label,
    subsystem: copy.bin.subsystem,
    cipher: 'aes-xts-plain64',
    keySize: linked[0]?.keySize ?? 64,
    sectorSize: segment.sectorSize,
    ivTweak: segment.ivTweak,
    dataOffset: segment.offset,
    dataSize: segment.size,
    keyslots: copy.parsed.keyslots,
    tokens: copy.parsed.tokens,
    converting: copy.parsed.config.requirementsMandatory.includes(CONVERT_REQUIREMENT),
    hdrSize: copy.bin.hdrSize,
    seqid: copy.bin.seqid,
    checksumAlg: copy.bin.checksumAlg,
    jsonSize: copy.parsed.config.jsonSize,
    keyslotsSize: copy.parsed.config.keyslotsSize,
    configFlags: copy.parsed.config.flags,
    segment,
    digest,
    usedCopy: 'primary',
    damaged: [],
    warnings: [],
    imageSize,
    json: copy.json,
    salts: { primary: null, secondary: null },
  };
}

async function statOf(path: string, what: string): Promise<Stats> {
  try {
    return await stat(path);
  } catch (err) {
    throw fromSystemError(err, path, what);
  }
}

/**
 * Reads and validates the LUKS2 header in `headerPath` (both copies; falls back to the secondary when
 * the primary is damaged and says so in `warnings`/`damaged`). `opts.imagePath` names the data file when
 * the header is detached. Refuses volumes atrest cannot serve (UNSUPPORTED, REENCRYPT_IN_PROGRESS).
 */
export async function readLuks2(
  headerPath: string,
  opts: { imagePath?: string } = {},
): Promise<Luks2Metadata> {
  const imagePath = opts.imagePath ?? headerPath;
  const fh = await openFile(headerPath, 'r', imagePath === headerPath ? 'image' : 'LUKS2 header');
  let meta: Luks2Metadata;
  try {
    const headerStat = await fh.stat();
    const headerSize = headerStat.size;
    if (headerSize === 0) {
      throw new AtrestError('NOT_LUKS2', `${headerPath} is empty, not a LUKS2 image`, {
        path: headerPath,
        hint: 'check the path, or format it first',
      });
    }
    const state = await readHeaders(fh, headerPath);
    const { chosen } = state;
    const need = 2 * chosen.bin.hdrSize + chosen.parsed.config.keyslotsSize;
    if (headerSize < need) {
      throw new AtrestError(
        'TRUNCATED_IMAGE',
        `${headerPath} is ${headerSize} bytes, shorter than its LUKS2 header and keyslots (${need} bytes)`,
        { path: headerPath, hint: 'restore it from a backup' },
      );
    }
    const needsRepair = (['primary', 'secondary'] as const).filter((kind) => {
      const r = state[kind];
      return !r.ok || r.copy.bin.seqid !== chosen.bin.seqid;
    });
    if (needsRepair.length > 0) {
      await refuseForeignSignature(
        fh,
        headerPath,
        chosen.bin.hdrSize,
        `the ${needsRepair.join(' and ')} LUKS2 header needs repair`,
      );
    }
    const imageStat = imagePath === headerPath ? headerStat : await statOf(imagePath, 'image');
    const imageSize = imageStat.size;
    meta = build(headerPath, imagePath, imageSize, chosen);
    refuseDataOverHeader(headerPath, headerStat, imageStat, meta.dataOffset, need);

    meta.usedCopy = state.usedCopy;
    meta.salts = state.salts;
    for (const kind of ['primary', 'secondary'] as const) {
      const r = state[kind];
      if (!r.ok) {
        meta.damaged.push(kind);
        meta.warnings.push(
          `${kind} LUKS2 header in ${headerPath} is damaged (${r.reason}); using the ${state.usedCopy}`,
        );
      } else if (r.copy.bin.seqid !== chosen.bin.seqid) {
        meta.damaged.push(kind);
        meta.warnings.push(
          `${kind} LUKS2 header in ${headerPath} is stale (seqid ${r.copy.bin.seqid} < ${chosen.bin.seqid})`,
        );
      }
    }
  } finally {
    await fh.close();
  }
  // header-only commands work without the data; serving it (resolvedDataSize) refuses. An image under
  // in-place conversion grows as the conversion starts; its plan knows the size.
  if (!meta.converting && !dataFits(meta, meta.imageSize)) {
    meta.warnings.push(
      meta.imageSize <= meta.dataOffset
        ? `${meta.imagePath} holds no data (its data segment starts at byte ${meta.dataOffset}, where the file ends)`
        : `${meta.imagePath} is shorter than its data segment (offset ${meta.dataOffset}, size ${String(meta.dataSize)})`,
    );
  }
  return meta;
}

/**
 * Bytes of data the volume serves for an image of `imageFileSize` bytes: the fixed segment size, or
 * (for 'dynamic') from the data offset to the end, rounded down to whole sectors.
 */
export function resolvedDataSize(meta: Luks2Volume, imageFileSize: number): number {
  checkFits(meta, imageFileSize);
  if (meta.dataSize !== 'dynamic') return meta.dataSize;
  const size = imageFileSize - meta.dataOffset;
  return size - (size % meta.sectorSize);
}

/**
 * Writes `json` as the new metadata of `meta` (both copies, seqid + 1), after validating it; damaged
 * copies are rewritten with fresh salts. Refuses if the header changed on disk since it was read.
 * Updates `meta` in place. Holds the metadata lock (re-entrant) so the check and the write are one step;
 * callers that read, decide and write hold it across all three (updateLuks2).
 */
export async function writeMetadata(meta: Luks2Metadata, json: JsonObject): Promise<void> {
  return withMetadataLock(meta.headerPath, () => writeMetadataLocked(meta, json));
}

async function writeMetadataLocked(meta: Luks2Metadata, json: JsonObject): Promise<void> {
  const parsed = (() => {
    try {
      return parseMetadata(json, meta.hdrSize);
    } catch (err) {
      if (err instanceof InvalidMetadata)
        throw new AtrestError('INTERNAL', `refusing to write invalid metadata: ${err.message}`);
      throw err;
    }
  })();
  const fh = await openFile(meta.headerPath, 'r+', 'LUKS2 header');
  try {
    // like cryptsetup's sequence-id check: the copy we read must still be what is on disk
    const checkOffset = meta.usedCopy === 'primary' ? 0 : meta.hdrSize;
    const onDisk = await readAt(fh, checkOffset, BIN_HEADER_SIZE);
    const bin = onDisk.length === BIN_HEADER_SIZE ? decodeBinaryHeader(onDisk) : null;
    if (!bin || bin.seqid !== meta.seqid || bin.uuid !== meta.uuid) {
      throw new AtrestError('IMAGE_BUSY', `${meta.headerPath}: the LUKS2 header changed since it was read`, {
        path: meta.headerPath,
        hint: 'another program is changing it; try again',
      });
    }
    if (meta.damaged.length > 0) {
      await refuseForeignSignature(
        fh,
        meta.headerPath,
        meta.hdrSize,
        `the ${meta.damaged.join(' and ')} LUKS2 header needs repair`,
      );
    }
    const seqid = meta.seqid + 1n;
    const salts = await writeHeaders(fh, {
      hdrSize: meta.hdrSize,
      seqid,
      label: meta.label,
      subsystem: meta.subsystem,
      uuid: meta.uuid,
      checksumAlg: meta.checksumAlg,
      salts: meta.salts,
      json,
      jsonSize: meta.jsonSize,
    });
    const fresh = build(meta.headerPath, meta.imagePath, meta.imageSize, {
      bin: {
        uuid: meta.uuid,
        label: meta.label,
        subsystem: meta.subsystem,
        checksumAlg: meta.checksumAlg,
        hdrSize: meta.hdrSize,
        seqid,
      },
      json,
      parsed,
    });
    Object.assign(meta, fresh, { salts, usedCopy: 'primary', damaged: [], warnings: [] });
  } finally {
    await fh.close();
  }
}
