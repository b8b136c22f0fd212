// LUKS2 JSON metadata: structural validation (like cryptsetup's LUKS2_hdr_validate) into typed records; the raw object is kept for rewrites.
import { Buffer } from 'node:buffer';

export type Json = null | boolean | number | string | Json[] | JsonObject;
export interface JsonObject {
  [key: string]: Json;
}

/** Thrown while validating one header copy; becomes part of a CORRUPT_HEADER message. */
export class InvalidMetadata extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidMetadata';
  }
}

export const KEYSLOTS_MAX = 32;
export const TOKENS_MAX = 32;
export const SEGMENTS_MAX = 32;
/** Keyslot areas, the keyslots area and data offsets are aligned to this. */
export const AREA_ALIGN = 4096;

export interface KeyslotArea {
  type: string;
  offset: number;
  size: number;
  encryption: string | undefined;
  keySize: number | undefined;
}

export interface KeyslotInfo {
  id: number;
  /** 'luks2' for ordinary keyslots; 'reencrypt' marks an unfinished reencryption. */
  type: string;
  /** KDF type ('pbkdf2', 'argon2i', 'argon2id'), or '' when the keyslot has none. */
  kdf: string;
  /** 0 = ignored unless asked for, 1 = normal, 2 = tried first. */
  priority: number;
  /** Size in bytes of the key this keyslot stores. */
  keySize: number;
  area: KeyslotArea;
}

export interface SegmentInfo {
  id: number;
  type: string;
  offset: number;
  size: number | 'dynamic';
  ivTweak: number;
  encryption: string;
  sectorSize: number;
  flags: string[];
  integrity: boolean;
}

export interface DigestInfo {
  id: number;
  type: string;
  keyslots: number[];
  segments: number[];
}

export interface TokenInfo {
  id: number;
  type: string;
  keyslots: number[];
  /** The token's whole JSON object (types like luks2-keyring or systemd-tpm2 carry their own fields). */
  raw: JsonObject;
}

export interface ConfigInfo {
  jsonSize: number;
  keyslotsSize: number;
  flags: string[];
  requirementsMandatory: string[];
}

export interface ParsedMetadata {
  keyslots: KeyslotInfo[];
  segments: SegmentInfo[];
  digests: DigestInfo[];
  tokens: TokenInfo[];
  config: ConfigInfo;
}

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(msg: string): never {
  throw new InvalidMetadata(msg);
}

export function getObject(o: JsonObject, key: string, where: string): JsonObject {
  const v = o[key];
  if (!isObject(v)) fail(`${where}.${key} is missing or not an object`);
  return v;
}

export function getString(o: JsonObject, key: string, where: string): string {
  const v = o[key];
  if (typeof v !== 'string') fail(`${where}.${key} is missing or not a string`);
  return v;
}

export function getInt(o: JsonObject, key: string, where: string, min = 0): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    fail(`${where}.${key} is missing or not an integer >= ${min}`);
  }
  return v;
}

/** A LUKS2 uint64 field: a decimal string (JSON numbers cannot hold 64 bits). */
export function getU64(o: JsonObject, key: string, where: string): number {
  const v = o[key];
  if (typeof v !== 'string' || !/^[0-9]{1,20}$/.test(v)) {
    fail(`${where}.${key} is missing or not a decimal string`);
  }
  const n = Number(v);
  if (!Number.isSafeInteger(n)) fail(`${where}.${key} = ${v} is too large`);
  return n;
}

export function getBase64(o: JsonObject, key: string, where: string): Buffer {
  const s = getString(o, key, where);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) fail(`${where}.${key} is not base64`);
  return Buffer.from(s, 'base64');
}

function idOf(key: string, max: number, where: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(key)) fail(`${where} id "${key}" is not a number`);
  const n = Number(key);
  if (n >= max) fail(`${where} id ${n} is out of range (max ${max - 1})`);
  return n;
}

function idArray(o: JsonObject, key: string, where: string): number[] {
  const v = o[key];
  if (!Array.isArray(v)) fail(`${where}.${key} is missing or not an array`);
  return v.map((x) => {
    if (typeof x !== 'string' || !/^(0|[1-9][0-9]*)$/.test(x)) fail(`${where}.${key} has a non-numeric id`);
    return Number(x);
  });
}

function stringArray(o: JsonObject, key: string, where: string): string[] {
  const v = o[key];
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    fail(`${where}.${key} is not an array of strings`);
  }
  return v;
}

function parseConfig(root: JsonObject, hdrSize: number): ConfigInfo {
  const c = getObject(root, 'config', 'metadata');
  const jsonSize = getU64(c, 'json_size', 'config');
  const keyslotsSize = getU64(c, 'keyslots_size', 'config');
  if (jsonSize !== hdrSize - 4096) {
    fail(`config.json_size ${jsonSize} does not match the header size ${hdrSize}`);
  }
  if (keyslotsSize % AREA_ALIGN !== 0) fail(`config.keyslots_size ${keyslotsSize} is not 4 KiB aligned`);
  const flags = stringArray(c, 'flags', 'config');
  let requirementsMandatory: string[] = [];
  const req = c.requirements;
  if (req !== undefined) {
    if (!isObject(req)) fail('config.requirements is not an object');
    requirementsMandatory = stringArray(req, 'mandatory', 'config.requirements');
  }
  return { jsonSize, keyslotsSize, flags, requirementsMandatory };
}

function parseKeyslot(id: number, ks: JsonObject): KeyslotInfo {
  const where = `keyslot ${id}`;
  const type = getString(ks, 'type', where);
  const keySize = getInt(ks, 'key_size', where);
  const a = getObject(ks, 'area', where);
  const area: KeyslotArea = {
    type: getString(a, 'type', `${where}.area`),
    offset: getU64(a, 'offset', `${where}.area`),
    size: getU64(a, 'size', `${where}.area`),
    encryption: typeof a.encryption === 'string' ? a.encryption : undefined,
    keySize: typeof a.key_size === 'number' ? a.key_size : undefined,
  };
  let kdf = '';
  if (ks.kdf !== undefined) kdf = getString(getObject(ks, 'kdf', where), 'type', `${where}.kdf`);
  let priority = 1;
  if (ks.priority !== undefined) {
    priority = getInt(ks, 'priority', where);
    if (priority > 2) fail(`${where}.priority ${priority} is not 0, 1 or 2`);
  }
  return { id, type, kdf, priority, keySize, area };
}

function parseSegment(id: number, s: JsonObject): SegmentInfo {
  const where = `segment ${id}`;
  const type = getString(s, 'type', where);
  const offset = getU64(s, 'offset', where);
  const size: number | 'dynamic' = s.size === 'dynamic' ? 'dynamic' : getU64(s, 'size', where);
  const flags = stringArray(s, 'flags', where);
  let ivTweak = 0;
  let encryption = '';
  let sectorSize = 512;
  if (type === 'crypt') {
    ivTweak = getU64(s, 'iv_tweak', where);
    encryption = getString(s, 'encryption', where);
    sectorSize = getInt(s, 'sector_size', where);
    if (![512, 1024, 2048, 4096].includes(sectorSize)) {
      fail(`${where}.sector_size ${sectorSize} is not 512, 1024, 2048 or 4096`);
    }
    if (s.integrity !== undefined && !isObject(s.integrity)) fail(`${where}.integrity is not an object`);
  }
  if (offset % 512 !== 0) fail(`${where}.offset ${offset} is not 512-byte aligned`);
  if (size !== 'dynamic' && size % sectorSize !== 0) {
    fail(`${where}.size ${size} is not a multiple of its sector size ${sectorSize}`);
  }
  return {
    id,
    type,
    offset,
    size,
    ivTweak,
    encryption,
    sectorSize,
    flags,
    integrity: s.integrity !== undefined,
  };
}

function sortedEntries(o: JsonObject, max: number, where: string): Array<[number, JsonObject]> {
  const out: Array<[number, JsonObject]> = [];
  for (const [k, v] of Object.entries(o)) {
    if (!isObject(v)) fail(`${where} ${k} is not an object`);
    out.push([idOf(k, max, where), v]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * Validates the JSON object of one header copy of `hdrSize` bytes and returns typed records.
 * Throws InvalidMetadata with the first problem found.
 */
export function parseMetadata(root: Json, hdrSize: number): ParsedMetadata {
  if (!isObject(root)) fail('metadata is not a JSON object');
  const config = parseConfig(root, hdrSize);
  const keyslotsStart = 2 * hdrSize;
  const keyslotsEnd = keyslotsStart + config.keyslotsSize;

  const keyslots = sortedEntries(getObject(root, 'keyslots', 'metadata'), KEYSLOTS_MAX, 'keyslot').map(
    ([id, ks]) => parseKeyslot(id, ks),
  );
  let prevEnd = keyslotsStart;
  for (const ks of [...keyslots].sort((a, b) => a.area.offset - b.area.offset)) {
    const { offset, size } = ks.area;
    if (offset < keyslotsStart || offset + size > keyslotsEnd) {
      fail(`keyslot ${ks.id} area [${offset}, +${size}) is outside the keyslots area`);
    }
    if (offset < prevEnd) fail(`keyslot ${ks.id} area overlaps another keyslot`);
    prevEnd = offset + size;
  }

  const segments = sortedEntries(getObject(root, 'segments', 'metadata'), SEGMENTS_MAX, 'segment').map(
    ([id, s]) => parseSegment(id, s),
  );
  // backup segments (reencryption) sit beside the real ones and may repeat their offsets
  const live = segments.filter((s) => !s.flags.some((f) => f.startsWith('backup-')));
  live.forEach((s, i) => {
    if (s.size === 'dynamic' && i !== live.length - 1) fail(`segment ${s.id} is dynamic but not last`);
  });
  segments.forEach((s) => {
    if (s.offset !== 0 && s.offset < keyslotsEnd) {
      fail(`segment ${s.id} offset ${s.offset} overlaps the keyslots area (ends at ${keyslotsEnd})`);
    }
  });

  const keyslotIds = new Set(keyslots.map((k) => k.id));
  const segmentIds = new Set(segments.map((s) => s.id));
  const digests = sortedEntries(getObject(root, 'digests', 'metadata'), KEYSLOTS_MAX, 'digest').map(
    ([id, d]): DigestInfo => {
      const where = `digest ${id}`;
      const info: DigestInfo = {
        id,
        type: getString(d, 'type', where),
        keyslots: idArray(d, 'keyslots', where),
        segments: idArray(d, 'segments', where),
      };
      for (const k of info.keyslots) if (!keyslotIds.has(k)) fail(`${where} names missing keyslot ${k}`);
      for (const s of info.segments) if (!segmentIds.has(s)) fail(`${where} names missing segment ${s}`);
      return info;
    },
  );
  const tokens = sortedEntries(getObject(root, 'tokens', 'metadata'), TOKENS_MAX, 'token').map(
    ([id, t]): TokenInfo => {
      const where = `token ${id}`;
      const info: TokenInfo = {
        id,
        type: getString(t, 'type', where),
        keyslots: idArray(t, 'keyslots', where),
        raw: t,
      };
      for (const k of info.keyslots) if (!keyslotIds.has(k)) fail(`${where} names missing keyslot ${k}`);
      return info;
    },
  );
  return { keyslots, segments, digests, tokens, config };
}

/**
 * Finds the JSON text in a JSON area: it must start with '{' and be followed only by NUL bytes.
 * Returns the parsed value.
 */
export function parseJsonArea(area: Uint8Array): Json {
  const buf = Buffer.from(area.buffer, area.byteOffset, area.length);
  if (buf[0] !== 0x7b) fail('JSON area does not start with "{"');
  const end = buf.indexOf(0);
  if (end < 0) fail('JSON area has no terminating NUL byte');
  for (let i = end; i < buf.length; i++) {
    if (buf[i] !== 0) fail(`JSON area has stray bytes after the JSON text (at ${i})`);
  }
  try {
    return JSON.parse(buf.subarray(0, end).toString('utf8')) as Json;
  } catch (err) {
    fail(`JSON does not parse: ${(err as Error).message}`);
  }
}

/** Serializes metadata into a JSON area of `jsonSize` bytes (text, then zeros). */
export function encodeJsonArea(root: JsonObject, jsonSize: number): Buffer {
  const text = Buffer.from(JSON.stringify(root), 'utf8');
  if (text.length > jsonSize - 1) {
    throw new InvalidMetadata(
      `metadata JSON (${text.length} bytes) does not fit the ${jsonSize}-byte JSON area`,
    );
  }
  const area = Buffer.alloc(jsonSize);
  text.copy(area);
  return area;
}
