// Reading and writing both LUKS2 header copies: validation, choice by seqid, fallback to the secondary, repair on write.
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { AtrestError, fromSystemError } from '../errors/index.js';
import {
  BIN_HEADER_SIZE,
  checksumAlgSupported,
  checksumMatches,
  decodeBinaryHeader,
  encodeBinaryHeader,
  magicKind,
  SALT_LEN,
  SECONDARY_OFFSETS,
  setChecksum,
  VALID_HDR_SIZES,
  type BinaryHeader,
} from './binary-header.js';
import {
  encodeJsonArea,
  InvalidMetadata,
  isObject,
  parseJsonArea,
  parseMetadata,
  type JsonObject,
  type ParsedMetadata,
} from './metadata.js';

/** One header copy that passed every check. */
export interface HeaderCopy {
  bin: BinaryHeader;
  json: JsonObject;
  parsed: ParsedMetadata;
}

export type CopyResult =
  | { ok: true; copy: HeaderCopy }
  | {
      ok: false;
      reason: string;
      truncated: boolean;
      bin: BinaryHeader | null;
      magic: 'primary' | 'secondary' | 'none';
    };

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? buf : buf.subarray(0, done);
}

async function writeAt(fh: FileHandle, offset: number, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}

export { readAt, writeAt };

/** Reads and validates the header copy at `offset` (secondary copies carry the "SKUL" magic). */
export async function readCopy(fh: FileHandle, offset: number, secondary: boolean): Promise<CopyResult> {
  const raw = await readAt(fh, offset, BIN_HEADER_SIZE);
  const magic = magicKind(raw);
  const bad = (reason: string, truncated = false, bin: BinaryHeader | null = null): CopyResult => ({
    ok: false,
    reason,
    truncated,
    bin,
    magic,
  });
  if (raw.length < BIN_HEADER_SIZE) return bad('the file ends inside the binary header', magic !== 'none');
  const bin = decodeBinaryHeader(raw);
  if (magic !== (secondary ? 'secondary' : 'primary')) return bad('no LUKS2 magic');
  if (bin.version !== 2) return bad(`version ${bin.version}, not 2`, false, bin);
  if (bin.hdrOffset !== offset) return bad(`hdr_offset ${bin.hdrOffset} is not ${offset}`, false, bin);
  if (!VALID_HDR_SIZES.includes(bin.hdrSize)) return bad(`bogus hdr_size ${bin.hdrSize}`, false, bin);
  if (secondary && bin.hdrSize !== offset)
    return bad(`hdr_size ${bin.hdrSize} does not match its offset`, false, bin);
  if (!checksumAlgSupported(bin.checksumAlg)) {
    return bad(`unknown checksum algorithm "${bin.checksumAlg}"`, false, bin);
  }
  const jsonArea = await readAt(fh, offset + BIN_HEADER_SIZE, bin.hdrSize - BIN_HEADER_SIZE);
  if (jsonArea.length < bin.hdrSize - BIN_HEADER_SIZE)
    return bad('the file ends inside the JSON area', true, bin);
  if (!checksumMatches(bin.checksumAlg, raw, jsonArea)) return bad('checksum mismatch', false, bin);
  try {
    const json = parseJsonArea(jsonArea);
    const parsed = parseMetadata(json, bin.hdrSize);
    if (!isObject(json)) return bad('metadata is not an object', false, bin);
    return { ok: true, copy: { bin, json, parsed } };
  } catch (err) {
    if (err instanceof InvalidMetadata) return bad(`invalid metadata: ${err.message}`, false, bin);
    throw err;
  }
}

export interface HeaderState {
  chosen: HeaderCopy;
  usedCopy: 'primary' | 'secondary';
  primary: CopyResult;
  secondary: CopyResult;
  /** Salts to keep on the next write (null: regenerate, the copy was damaged). */
  salts: { primary: Buffer | null; secondary: Buffer | null };
}

function describe(path: string, primary: CopyResult, secondary: CopyResult): AtrestError {
  const p = primary.ok ? null : primary;
  const s = secondary.ok ? null : secondary;
  if (p && p.magic === 'primary' && p.bin && p.bin.version !== 2 && (!s || s.magic === 'none')) {
    const what = p.bin.version === 1 ? 'a LUKS1 image' : `LUKS version ${p.bin.version}`;
    return new AtrestError('NOT_LUKS2', `${path} is ${what}, not LUKS2`, {
      path,
      hint:
        p.bin.version === 1
          ? 'convert it with "cryptsetup convert --type luks2" (back it up first) or open it with cryptsetup'
          : 'open it with a tool that knows this format',
    });
  }
  if (p && p.magic === 'none' && (!s || s.magic === 'none')) {
    return new AtrestError('NOT_LUKS2', `${path} is not a LUKS2 image (no LUKS header at offset 0)`, {
      path,
      hint: 'check the path, or pass the detached header with --header',
    });
  }
  if (p?.truncated || s?.truncated) {
    return new AtrestError('TRUNCATED_IMAGE', `${path} is truncated: it ends inside the LUKS2 header`, {
      path,
      hint: 'restore the image from a backup',
    });
  }
  return new AtrestError(
    'CORRUPT_HEADER',
    `both LUKS2 header copies in ${path} are damaged (primary: ${p?.reason ?? 'ok'}; secondary: ${s?.reason ?? 'ok'})`,
    { path, hint: 'restore the header from a backup (cryptsetup luksHeaderRestore)' },
  );
}

/** Reads both copies and picks the valid one with the higher seqid (the primary on a tie). */
export async function readHeaders(fh: FileHandle, path: string): Promise<HeaderState> {
  const primary = await readCopy(fh, 0, false);
  let secondary: CopyResult;
  const sane = primary.ok
    ? primary.copy.bin
    : primary.bin && VALID_HDR_SIZES.includes(primary.bin.hdrSize)
      ? primary.bin
      : null;
  if (sane) {
    secondary = await readCopy(fh, sane.hdrSize, true);
  } else {
    secondary = { ok: false, reason: 'not found', truncated: false, bin: null, magic: 'none' };
  }
  if (!secondary.ok && !primary.ok) {
    // no trustworthy size in the primary: look at every offset a secondary may have
    for (const off of SECONDARY_OFFSETS) {
      if (sane && off === sane.hdrSize) continue;
      const r = await readCopy(fh, off, true);
      if (r.ok) {
        secondary = r;
        break;
      }
      if (r.magic === 'secondary' && secondary.magic === 'none') secondary = r;
    }
  }
  let usedCopy: 'primary' | 'secondary';
  if (primary.ok && secondary.ok) {
    usedCopy = secondary.copy.bin.seqid > primary.copy.bin.seqid ? 'secondary' : 'primary';
  } else if (primary.ok) usedCopy = 'primary';
  else if (secondary.ok) usedCopy = 'secondary';
  else throw describe(path, primary, secondary);
  const chosen =
    usedCopy === 'primary'
      ? (primary as { copy: HeaderCopy }).copy
      : (secondary as { copy: HeaderCopy }).copy;
  const keepSalt = (r: CopyResult): Buffer | null =>
    r.ok && r.copy.bin.seqid === chosen.bin.seqid ? r.copy.bin.salt : null;
  return {
    chosen,
    usedCopy,
    primary,
    secondary,
    salts: { primary: keepSalt(primary), secondary: keepSalt(secondary) },
  };
}

export interface WriteHeaderArgs {
  hdrSize: number;
  seqid: bigint;
  label: string;
  subsystem: string;
  uuid: string;
  checksumAlg: string;
  salts: { primary: Buffer | null; secondary: Buffer | null };
  json: JsonObject;
  jsonSize: number;
}

/**
 * Writes both copies like cryptsetup: primary at 0, then secondary at hdr_size; each as binary header
 * without checksum, JSON area, binary header with checksum, then fsync. Missing salts are regenerated.
 * Returns the salts written.
 */
export async function writeHeaders(
  fh: FileHandle,
  a: WriteHeaderArgs,
): Promise<{ primary: Buffer; secondary: Buffer }> {
  const area = encodeJsonArea(a.json, a.jsonSize);
  if (area.length !== a.hdrSize - BIN_HEADER_SIZE)
    throw new InvalidMetadata('json_size does not match hdr_size');
  const salts = {
    primary: a.salts.primary ?? randomBytes(SALT_LEN),
    secondary: a.salts.secondary ?? randomBytes(SALT_LEN),
  };
  for (const kind of ['primary', 'secondary'] as const) {
    const offset = kind === 'primary' ? 0 : a.hdrSize;
    const bin = encodeBinaryHeader({
      kind,
      version: 2,
      hdrSize: a.hdrSize,
      seqid: a.seqid,
      label: a.label,
      checksumAlg: a.checksumAlg,
      salt: salts[kind],
      uuid: a.uuid,
      subsystem: a.subsystem,
      hdrOffset: offset,
    });
    await writeAt(fh, offset, bin);
    await writeAt(fh, offset + BIN_HEADER_SIZE, area);
    setChecksum(a.checksumAlg, bin, area);
    await writeAt(fh, offset, bin);
    await fh.sync();
  }
  return salts;
}

/** Opens `path` for reading or writing, turning fs errors into AtrestErrors. */
export async function openFile(path: string, flags: 'r' | 'r+', what: string): Promise<FileHandle> {
  try {
    return await open(path, flags);
  } catch (err) {
    throw fromSystemError(err, path, what);
  }
}
