// LUKS2 JSON metadata: validated (validate.ts, cryptsetup's invariants), then read into typed records; the raw object is kept for rewrites.
import { Buffer } from 'node:buffer';
import { parseJsonText } from './json-text.js';
import { InvalidMetadata, isObject, type Json, type JsonObject } from './json-value.js';
import { validateLuks2Json } from './validate.js';
import { strtoull } from './validate-json.js';

// The JSON value types and InvalidMetadata live in json-value.ts (which the parser and validators share without
// importing this module); re-exported here with the accessors below.
export { InvalidMetadata, isObject, type Json, type JsonObject } from './json-value.js';

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
  /** A field whose valid 64-bit value is beyond 2^53 - 1 (JavaScript numbers): atrest cannot serve it. */
  tooLarge?: string;
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

function idOf(key: string, where: string): number {
  // cryptsetup takes any digit string; ids with leading zeros would alias others here
  if (!/^(0|[1-9][0-9]{0,14})$/.test(key)) fail(`${where} id "${key}" is not a plain decimal number`);
  return Number(key);
}

/** A u64 decimal string that validate.ts already accepted, as a number (maybe beyond 2^53). */
function u64Value(o: JsonObject, key: string): { value: number; safe: boolean } {
  const v = strtoull(o[key] as string) ?? 0n;
  return { value: Number(v), safe: v <= BigInt(Number.MAX_SAFE_INTEGER) };
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
  const jsonSize = hdrSize - 4096; // validate.ts checked config.json_size against it
  const keyslotsSize = u64Value(c, 'keyslots_size').value;
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
    offset: u64Value(a, 'offset').value,
    size: u64Value(a, 'size').value,
    encryption: typeof a.encryption === 'string' ? a.encryption : undefined,
    keySize: typeof a.key_size === 'number' ? a.key_size : undefined,
  };
  const kdfType = isObject(ks.kdf) ? ks.kdf.type : undefined;
  const kdf = typeof kdfType === 'string' ? kdfType : '';
  // like cryptsetup: only 1 (normal) and 2 (prefer) are tried without naming the key slot
  const p = ks.priority;
  const priority = p === undefined ? 1 : p === 1 || p === 2 ? p : 0;
  return { id, type, kdf, priority, keySize, area };
}

function parseSegment(id: number, s: JsonObject): SegmentInfo {
  const where = `segment ${id}`;
  const type = getString(s, 'type', where);
  const tooLarge: string[] = [];
  const u64 = (key: string): number => {
    const { value, safe } = u64Value(s, key);
    if (!safe) tooLarge.push(`${where}.${key} ${s[key] as string}`);
    return value;
  };
  const offset = u64('offset');
  const size: number | 'dynamic' = s.size === 'dynamic' ? 'dynamic' : u64('size');
  const flags = stringArray(s, 'flags', where);
  let ivTweak = 0;
  let encryption = '';
  let sectorSize = 512;
  if (type === 'crypt') {
    ivTweak = u64('iv_tweak');
    encryption = getString(s, 'encryption', where);
    sectorSize = getInt(s, 'sector_size', where);
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
    ...(tooLarge.length > 0 ? { tooLarge: tooLarge.join(', ') } : {}),
  };
}

function sortedEntries(o: JsonObject, where: string): Array<[number, JsonObject]> {
  const out: Array<[number, JsonObject]> = [];
  for (const [k, v] of Object.entries(o)) {
    if (!isObject(v)) fail(`${where} ${k} is not an object`);
    out.push([idOf(k, where), v]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * Validates the JSON object of one header copy of `hdrSize` bytes and returns typed records.
 * Throws InvalidMetadata with the first problem found.
 */
export function parseMetadata(root: Json, hdrSize: number): ParsedMetadata {
  validateLuks2Json(root, hdrSize - 4096);
  const config = parseConfig(root, hdrSize);
  const keyslots = sortedEntries(getObject(root, 'keyslots', 'metadata'), 'keyslot').map(([id, ks]) =>
    parseKeyslot(id, ks),
  );
  const segments = sortedEntries(getObject(root, 'segments', 'metadata'), 'segment').map(([id, s]) =>
    parseSegment(id, s),
  );
  const keyslotIds = new Set(keyslots.map((k) => k.id));
  const segmentIds = new Set(segments.map((s) => s.id));
  const digests = sortedEntries(getObject(root, 'digests', 'metadata'), 'digest').map(
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
  const tokens = sortedEntries(getObject(root, 'tokens', 'metadata'), 'token').map(([id, t]): TokenInfo => {
    const where = `token ${id}`;
    const info: TokenInfo = {
      id,
      type: getString(t, 'type', where),
      keyslots: idArray(t, 'keyslots', where),
      raw: t,
    };
    for (const k of info.keyslots) if (!keyslotIds.has(k)) fail(`${where} names missing keyslot ${k}`);
    return info;
  });
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
  return parseJsonText(buf.subarray(0, end).toString('utf8'));
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
