// JSON access like cryptsetup's json_contains helpers (luks2_json_metadata.c): typed members, numbered strings, strtoull; shared by the header validators.
import { isIntegerLiteral } from './json-text.js';
import { InvalidMetadata, isObject, type Json, type JsonObject } from './json-value.js';

export const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffff_ffff;
/** LUKS2 header (binary + JSON) sizes: 16 KiB to 4 MiB, powers of two. */
export const METADATA_SIZES = [
  0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/** LUKS2_MAX_KEYSLOTS_SIZE */
export const MAX_KEYSLOTS_SIZE = 0x800_0000n;
export const ONLINE_REENCRYPT = ['online-reencrypt', 'online-reencrypt-v2', 'online-reencrypt-v3'];

export function fail(msg: string): never {
  throw new InvalidMetadata(msg);
}

export const has = (o: JsonObject, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key);

export function member(o: Json | undefined, key: string): Json | undefined {
  return isObject(o) && has(o, key) ? o[key] : undefined;
}

export function obj(o: Json | undefined, key: string, where: string): JsonObject {
  const v = member(o, key);
  if (!isObject(v)) fail(`${where}.${key} is missing or not an object`);
  return v;
}

/** json_contains_string: a non-empty string. */
export function str(o: Json | undefined, key: string, where: string): string {
  const v = member(o, key);
  if (typeof v !== 'string' || v.length === 0) fail(`${where}.${key} is missing or not a non-empty string`);
  return v;
}

export function arr(o: Json | undefined, key: string, where: string): Json[] {
  const v = member(o, key);
  if (!Array.isArray(v)) fail(`${where}.${key} is missing or not an array`);
  return v;
}

/** json_type_int: written as an integer literal (any size). */
export function int(o: Json | undefined, key: string, where: string): number {
  const v = member(o, key);
  if (!isObject(o) || typeof v !== 'number' || !isIntegerLiteral(o, key)) {
    fail(`${where}.${key} is missing or not an integer`);
  }
  return v;
}

/** validate_json_uint32 */
export function uint32(o: Json | undefined, key: string, where: string): number {
  const v = int(o, key, where);
  if (v < 0 || v > U32_MAX) fail(`${where}.${key} ${v} is not a 32-bit unsigned integer`);
  return v;
}

/** numbered(): all decimal digits (cryptsetup takes object keys and numeric strings this way). */
export const numbered = (s: string): boolean => /^[0-9]*$/.test(s);

/** json_str_to_uint64 (strtoull, base 10, whole string), or null. */
export function strtoull(s: string): bigint | null {
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)$/.exec(s);
  if (m === null) return null;
  const v = BigInt(m[2] as string);
  if (v > U64_MAX) return null;
  return m[1] === '-' && v !== 0n ? U64_MAX + 1n - v : v;
}

/** A numbered decimal string that fits 64 bits. */
export function u64(o: Json | undefined, key: string, where: string): bigint {
  const s = str(o, key, where);
  const v = numbered(s) ? strtoull(s) : null;
  if (v === null) fail(`${where}.${key} "${s}" is not a 64-bit unsigned decimal string`);
  return v;
}

export function stringsOnly(a: Json[], where: string): string[] {
  if (!a.every((x) => typeof x === 'string')) fail(`${where} holds a value that is not a string`);
  return a;
}

export function mandatory(root: JsonObject): string[] {
  const m = member(member(member(root, 'config'), 'requirements'), 'mandatory');
  return Array.isArray(m) ? m.filter((x): x is string => typeof x === 'string') : [];
}

export const reencryptCandidate = (flag: string): boolean =>
  flag === 'online-reencrypt' || /^online-reencrypt-v[0-9]+$/.test(flag);
