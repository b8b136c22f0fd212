// The invariants cryptsetup's LUKS2_hdr_validate (lib/luks2/luks2_json_metadata.c, luks2_keyslot*.c, 2.6) enforces on one header copy's JSON, in its order; run on read and before every write.
import { Buffer } from 'node:buffer';
import { isIntegerLiteral } from './json-text.js';
import { InvalidMetadata, isObject, type Json, type JsonObject } from './metadata.js';

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffff_ffff;
/** LUKS2 header (binary + JSON) sizes: 16 KiB to 4 MiB, powers of two. */
const METADATA_SIZES = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];
/** LUKS2_MAX_KEYSLOTS_SIZE */
const MAX_KEYSLOTS_SIZE = 0x800_0000n;
const ONLINE_REENCRYPT = ['online-reencrypt', 'online-reencrypt-v2', 'online-reencrypt-v3'];

function fail(msg: string): never {
  throw new InvalidMetadata(msg);
}

const has = (o: JsonObject, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key);

function member(o: Json | undefined, key: string): Json | undefined {
  return isObject(o) && has(o, key) ? o[key] : undefined;
}

function obj(o: Json | undefined, key: string, where: string): JsonObject {
  const v = member(o, key);
  if (!isObject(v)) fail(`${where}.${key} is missing or not an object`);
  return v;
}

/** json_contains_string: a non-empty string. */
function str(o: Json | undefined, key: string, where: string): string {
  const v = member(o, key);
  if (typeof v !== 'string' || v.length === 0) fail(`${where}.${key} is missing or not a non-empty string`);
  return v;
}

function arr(o: Json | undefined, key: string, where: string): Json[] {
  const v = member(o, key);
  if (!Array.isArray(v)) fail(`${where}.${key} is missing or not an array`);
  return v;
}

/** json_type_int: written as an integer literal (any size). */
function int(o: Json | undefined, key: string, where: string): number {
  const v = member(o, key);
  if (!isObject(o) || typeof v !== 'number' || !isIntegerLiteral(o, key)) {
    fail(`${where}.${key} is missing or not an integer`);
  }
  return v;
}

/** validate_json_uint32 */
function uint32(o: Json | undefined, key: string, where: string): number {
  const v = int(o, key, where);
  if (v < 0 || v > U32_MAX) fail(`${where}.${key} ${v} is not a 32-bit unsigned integer`);
  return v;
}

/** numbered(): all decimal digits (cryptsetup takes object keys and numeric strings this way). */
const numbered = (s: string): boolean => /^[0-9]*$/.test(s);

/** json_str_to_uint64 (strtoull, base 10, whole string), or null. */
export function strtoull(s: string): bigint | null {
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)$/.exec(s);
  if (m === null) return null;
  const v = BigInt(m[2] as string);
  if (v > U64_MAX) return null;
  return m[1] === '-' && v !== 0n ? U64_MAX + 1n - v : v;
}

/** A numbered decimal string that fits 64 bits. */
function u64(o: Json | undefined, key: string, where: string): bigint {
  const s = str(o, key, where);
  const v = numbered(s) ? strtoull(s) : null;
  if (v === null) fail(`${where}.${key} "${s}" is not a 64-bit unsigned decimal string`);
  return v;
}

function stringsOnly(a: Json[], where: string): string[] {
  if (!a.every((x) => typeof x === 'string')) fail(`${where} holds a value that is not a string`);
  return a;
}

function isBackup(segment: Json | undefined): boolean {
  const flags = member(segment, 'flags');
  return Array.isArray(flags) && flags.some((f) => typeof f === 'string' && f.startsWith('backup-'));
}

function mandatory(root: JsonObject): string[] {
  const m = member(member(member(root, 'config'), 'requirements'), 'mandatory');
  return Array.isArray(m) ? m.filter((x): x is string => typeof x === 'string') : [];
}

const reencryptCandidate = (flag: string): boolean =>
  flag === 'online-reencrypt' || /^online-reencrypt-v[0-9]+$/.test(flag);

function validateRequirements(root: JsonObject): void {
  const config = obj(root, 'config', 'metadata');
  if (!has(config, 'requirements')) return;
  const req = obj(config, 'requirements', 'config');
  if (!has(req, 'mandatory')) return;
  const flags = stringsOnly(arr(req, 'mandatory', 'config.requirements'), 'config.requirements.mandatory');
  if (flags.filter(reencryptCandidate).length > 1) fail('config.requirements has several reencryption flags');
}

/** Each element a string naming an existing member (object) of `section`. */
function references(a: Json[], section: Json | undefined, what: string, where: string): void {
  for (const x of a) {
    if (typeof x !== 'string') fail(`${where} lists a ${what} id that is not a string`);
    if (!isObject(member(section, x))) fail(`${where} names missing ${what} ${x}`);
  }
}

function validateTokens(root: JsonObject): void {
  const keyslots = member(root, 'keyslots');
  if (keyslots === undefined) fail('metadata.keyslots is missing');
  for (const [id, t] of Object.entries(obj(root, 'tokens', 'metadata'))) {
    const where = `token ${id}`;
    if (!numbered(id)) fail(`token id "${id}" is not a number`);
    str(t, 'type', where);
    references(arr(t, 'keyslots', where), keyslots, 'keyslot', where);
  }
}

function validateDigests(root: JsonObject): void {
  const digests = obj(root, 'digests', 'metadata');
  const keyslots = obj(root, 'keyslots', 'metadata');
  const segments = obj(root, 'segments', 'metadata');
  for (const [id, d] of Object.entries(digests)) {
    const where = `digest ${id}`;
    if (!numbered(id)) fail(`digest id "${id}" is not a number`);
    str(d, 'type', where);
    const ks = arr(d, 'keyslots', where);
    const segs = arr(d, 'segments', where);
    references(ks, keyslots, 'keyslot', where);
    references(segs, segments, 'segment', where);
  }
}

function validateCryptSegment(s: JsonObject, id: string, digests: Json | undefined, size: bigint): void {
  const where = `segment ${id}`;
  str(s, 'iv_tweak', where);
  str(s, 'encryption', where);
  int(s, 'sector_size', where);
  if (has(s, 'integrity')) {
    const integrity = obj(s, 'integrity', where);
    for (const k of ['type', 'journal_encryption', 'journal_integrity'])
      str(integrity, k, `${where}.integrity`);
  }
  const sectorSize = uint32(s, 'sector_size', where);
  if (sectorSize === 0 || sectorSize % 512 !== 0)
    fail(`${where}.sector_size ${sectorSize} is not a multiple of 512`);
  u64(s, 'iv_tweak', where);
  if (size % BigInt(sectorSize) !== 0n)
    fail(`${where}.size ${size} is not a multiple of its sector size ${sectorSize}`);
  const assigned =
    isObject(digests) &&
    Object.values(digests).some((d) => {
      const segs = member(d, 'segments');
      return Array.isArray(segs) && segs.includes(id);
    });
  if (!assigned) fail(`${where} is in no digest`);
}

function validateSegments(root: JsonObject): void {
  const segments = obj(root, 'segments', 'metadata');
  const entries = Object.entries(segments);
  if (entries.length < 1) fail('metadata.segments is empty');
  const digests = member(root, 'digests');
  if (digests === undefined) fail('metadata.digests is missing');
  let firstBackup = -1;
  for (const [id, s] of entries) {
    const where = `segment ${id}`;
    if (!numbered(id)) fail(`segment id "${id}" is not a number`);
    const type = str(s, 'type', where);
    const offset = u64(s, 'offset', where);
    const sizeText = str(s, 'size', where);
    let size = 0n;
    if (sizeText !== 'dynamic') {
      size = u64(s, 'size', where);
      if (size === 0n) fail(`${where}.size is 0`);
    }
    if (offset % 512n !== 0n) fail(`${where}.offset ${offset} is not 512-byte aligned`);
    if (size % 512n !== 0n) fail(`${where}.size ${size} is not 512-byte aligned`);
    if (has(s as JsonObject, 'flags')) stringsOnly(arr(s, 'flags', where), `${where}.flags`);
    const n = Number(id || '0');
    if (isBackup(s)) {
      if (firstBackup < 0 || n < firstBackup) firstBackup = n;
    } else if (firstBackup >= 0 && n >= firstBackup) {
      fail(`${where} is a regular segment behind backup segment ${firstBackup}`);
    }
    if (type === 'crypt') validateCryptSegment(s as JsonObject, id, digests, size);
  }
  if (firstBackup === 0) fail('there is no regular segment');
  if (firstBackup >= entries.length)
    fail(`gap between the regular segments and backup segment ${firstBackup}`);
  const regular = firstBackup < 0 ? entries.length : firstBackup;
  const intervals: Array<{ offset: bigint; length: bigint }> = [];
  for (let i = 0; i < regular; i++) {
    const s = member(segments, String(i));
    if (s === undefined) fail(`gap at segment ${i}`);
    const offset = strtoull(member(s, 'offset') as string) ?? 0n;
    const sizeText = member(s, 'size') as string;
    const size = sizeText === 'dynamic' ? 0n : (strtoull(sizeText) ?? 0n);
    intervals.push({ offset, length: size === 0n ? U64_MAX : size });
  }
  intervals.forEach((a, i) => {
    if (a.length === U64_MAX && i !== intervals.length - 1)
      fail(`segment ${i} is dynamic but not the last one`);
    intervals.forEach((b, j) => {
      if (i === j) return;
      if (b.length !== U64_MAX && b.offset > U64_MAX - b.length) fail(`segment ${j} ends beyond 2^64`);
      if (a.offset >= b.offset && (b.length === U64_MAX || a.offset < b.offset + b.length)) {
        fail(`segments ${i} and ${j} overlap`);
      }
    });
  });
  for (let i = regular; i < entries.length; i++) {
    if (member(segments, String(i)) === undefined) fail(`gap at segment ${i}`);
  }
  if (mandatory(root).some((f) => ONLINE_REENCRYPT.includes(f))) {
    const backups = entries.slice(0).filter(([id]) => Number(id) >= regular);
    const flagged = (f: string): Json | undefined => {
      const found = backups.find(([, s]) => {
        const flags = member(s, 'flags');
        return Array.isArray(flags) && flags.includes(f);
      });
      return found?.[1];
    };
    const final = flagged('backup-final');
    const previous = flagged('backup-previous');
    if (final === undefined || previous === undefined) fail('a reencryption backup segment is missing');
    const same = (x: Json | undefined, y: Json | undefined): boolean => {
      const t = member(x, 'type');
      if (typeof t !== 'string' || t !== member(y, 'type')) return false;
      if (t !== 'crypt') return true;
      return (
        member(x, 'sector_size') === member(y, 'sector_size') &&
        member(x, 'encryption') === member(y, 'encryption')
      );
    };
    for (let i = 0; i < regular; i++) {
      const s = member(segments, String(i));
      const flags = member(s, 'flags');
      if (Array.isArray(flags) && flags.includes('in-reencryption')) {
        if (!same(s, final)) fail(`segment ${i} in reencryption does not match the backup-final segment`);
      } else if (!same(s, final) && !same(s, previous)) {
        fail(`segment ${i} matches neither reencryption backup segment`);
      }
    }
  }
}

function validateKeyslotsSection(root: JsonObject): void {
  for (const [id, ks] of Object.entries(obj(root, 'keyslots', 'metadata'))) {
    const where = `keyslot ${id}`;
    if (!numbered(id)) fail(`keyslot id "${id}" is not a number`);
    str(ks, 'type', where);
    uint32(ks, 'key_size', where);
  }
}

function metadataSize(root: JsonObject): bigint {
  return (strtoull(member(member(root, 'config'), 'json_size') as string) ?? 0n) + 4096n;
}

function keyslotsSize(root: JsonObject): bigint {
  return strtoull(member(member(root, 'config'), 'keyslots_size') as string) ?? 0n;
}

function validateConfig(root: JsonObject): void {
  const config = obj(root, 'config', 'metadata');
  const jsonSize = strtoull(str(config, 'json_size', 'config'));
  if (jsonSize === null) fail('config.json_size is not a 64-bit decimal number');
  const ksText = str(config, 'keyslots_size', 'config');
  const ks = strtoull(ksText);
  if (ks === null) fail('config.keyslots_size is not a 64-bit decimal number');
  const metadata = jsonSize + 4096n;
  if (!METADATA_SIZES.some((m) => BigInt(m) === metadata)) {
    fail(`config.json_size ${jsonSize} does not make a valid LUKS2 header size (${metadata} bytes)`);
  }
  if (ks % 4096n !== 0n || ks > MAX_KEYSLOTS_SIZE) {
    fail(`config.keyslots_size ${ksText} is not 4 KiB aligned or exceeds 128 MiB`);
  }
  const offsets = Object.values(obj(root, 'segments', 'metadata'))
    .filter((s) => !isBackup(s))
    .map((s) => strtoull(member(s, 'offset') as string) ?? 0n);
  if (!offsets.includes(0n) && offsets.length > 0) {
    const first = offsets.reduce((a, b) => (b < a ? b : a));
    if (first < ks || first - ks < 2n * metadata) {
      fail(`config.keyslots_size ${ks} does not fit between the headers and the data offset ${first}`);
    }
  }
  if (has(config, 'flags')) stringsOnly(arr(config, 'flags', 'config'), 'config.flags');
}

function validateAreas(root: JsonObject): void {
  const keyslots = member(root, 'keyslots');
  if (!isObject(keyslots)) fail('metadata.keyslots is missing');
  const metadata = metadataSize(root);
  const end = 2n * metadata + keyslotsSize(root);
  const areas: Array<{ id: string; offset: bigint; length: bigint }> = [];
  for (const [id, ks] of Object.entries(keyslots)) {
    const where = `keyslot ${id}.area`;
    const area = obj(ks, 'area', `keyslot ${id}`);
    str(area, 'type', where);
    areas.push({ id, offset: u64(area, 'offset', where), length: u64(area, 'size', where) });
  }
  for (const a of areas) {
    const where = `keyslot ${a.id} area [${a.offset}, +${a.length})`;
    if (a.offset < 2n * metadata) fail(`${where} starts inside the LUKS2 headers`);
    if (a.length === 0n) fail(`${where} is empty`);
    if (a.offset + a.length > end) fail(`${where} is outside the keyslots area (ends at ${end})`);
    for (const b of areas) {
      if (b !== a && a.offset >= b.offset && a.offset < b.offset + b.length) {
        fail(`keyslot ${a.id} area overlaps keyslot ${b.id} area`);
      }
    }
  }
}

/** luks2_keyslot_repair: drops KDF parameters another KDF type left behind (cryptsetup does it in memory too). */
function repairKdf(ks: Json | undefined): void {
  const kdf = member(ks, 'kdf');
  const type = member(kdf, 'type');
  if (!isObject(kdf) || typeof type !== 'string') return;
  const keep =
    type === 'pbkdf2'
      ? ['type', 'salt', 'hash', 'iterations']
      : type === 'argon2i' || type === 'argon2id'
        ? ['type', 'salt', 'time', 'memory', 'cpus']
        : null;
  if (keep === null) return;
  for (const k of Object.keys(kdf)) if (!keep.includes(k)) delete kdf[k];
}

/** luks2_keyslot_validate */
function validateLuks2Keyslot(ks: JsonObject, where: string): void {
  const kdf = obj(ks, 'kdf', where);
  const af = obj(ks, 'af', where);
  const area = obj(ks, 'area', where);
  const kdfType = str(kdf, 'type', `${where}.kdf`);
  if (kdfType === 'pbkdf2') {
    if (Object.keys(kdf).length !== 4)
      fail(`${where}.kdf has other fields than type, salt, hash, iterations`);
    str(kdf, 'hash', `${where}.kdf`);
    int(kdf, 'iterations', `${where}.kdf`);
    str(kdf, 'salt', `${where}.kdf`);
  } else if (kdfType === 'argon2i' || kdfType === 'argon2id') {
    if (Object.keys(kdf).length !== 5)
      fail(`${where}.kdf has other fields than type, salt, time, memory, cpus`);
    for (const k of ['time', 'memory', 'cpus']) int(kdf, k, `${where}.kdf`);
    str(kdf, 'salt', `${where}.kdf`);
  }
  const afType = str(af, 'type', `${where}.af`);
  if (afType !== 'luks1') fail(`${where}.af.type "${afType}" is not luks1`);
  str(af, 'hash', `${where}.af`);
  int(af, 'stripes', `${where}.af`);
  const areaType = str(area, 'type', `${where}.area`);
  if (areaType !== 'raw') fail(`${where}.area.type "${areaType}" is not raw`);
  str(area, 'encryption', `${where}.area`);
  int(area, 'key_size', `${where}.area`);
  str(area, 'offset', `${where}.area`);
  str(area, 'size', `${where}.area`);
}

/** reenc_keyslot_validate */
function validateReencryptKeyslot(ks: JsonObject, where: string): void {
  const area = obj(ks, 'area', where);
  const type = str(area, 'type', `${where}.area`);
  int(ks, 'key_size', where);
  const mode = str(ks, 'mode', where);
  const direction = str(ks, 'direction', where);
  if (uint32(ks, 'key_size', where) !== 1) fail(`${where}.key_size is not 1`);
  if (!['reencrypt', 'encrypt', 'decrypt'].includes(mode)) fail(`${where}.mode "${mode}" is not valid`);
  if (!['forward', 'backward'].includes(direction)) fail(`${where}.direction "${direction}" is not valid`);
  if (type === 'checksum' || type === 'datashift-checksum') {
    str(area, 'hash', `${where}.area`);
    const sectorSize = uint32(area, 'sector_size', `${where}.area`);
    if (sectorSize < 512 || (sectorSize & (sectorSize - 1)) !== 0)
      fail(`${where}.area.sector_size is not valid`);
  } else if (type === 'datashift' || type === 'datashift-journal') {
    const shift = strtoull(str(area, 'shift_size', `${where}.area`)) ?? 0n;
    if (shift === 0n || shift % 512n !== 0n) fail(`${where}.area.shift_size is not valid`);
  }
}

function validateKeyslotTypes(root: JsonObject): void {
  const keyslots = obj(root, 'keyslots', 'metadata');
  const digests = Object.values(obj(root, 'digests', 'metadata'));
  let reencrypt = 0;
  for (const [id, ks] of Object.entries(keyslots)) {
    const where = `keyslot ${id}`;
    const type = member(ks, 'type');
    if (type === 'luks2') {
      validateLuks2Keyslot(ks as JsonObject, where);
      const name = String(Number(id || '0'));
      const count = digests.filter((d) => {
        const k = member(d, 'keyslots');
        return Array.isArray(k) && k.includes(name);
      }).length;
      if (count !== 1) fail(`${where} is in ${count} digests; a key slot must be in exactly one`);
    } else if (type === 'reencrypt') {
      validateReencryptKeyslot(ks as JsonObject, where);
      reencrypt++;
    }
  }
  const flags = mandatory(root);
  if (flags.some((f) => ONLINE_REENCRYPT.includes(f)) && reencrypt === 0)
    fail('the reencryption key slot is missing');
  if (reencrypt > 0 && !flags.some(reencryptCandidate))
    fail('a reencryption key slot without its requirement flag');
  if (reencrypt > 1) fail('more than one reencryption key slot');
}

/**
 * Checks the JSON metadata of a header copy whose JSON area is `jsonAreaSize` bytes, like cryptsetup
 * (which refuses to load a header that fails any of these). KDF parameters left over from another
 * KDF type are dropped from `root` first, as cryptsetup's repair does. Throws InvalidMetadata.
 */
export function validateLuks2Json(root: Json, jsonAreaSize: number): asserts root is JsonObject {
  if (!isObject(root)) fail('metadata is not a JSON object');
  const keyslots = member(root, 'keyslots');
  if (isObject(keyslots)) {
    for (const ks of Object.values(keyslots)) if (member(ks, 'type') === 'luks2') repairKdf(ks);
  }
  validateRequirements(root);
  validateTokens(root);
  validateDigests(root);
  validateSegments(root);
  validateKeyslotsSection(root);
  validateConfig(root);
  validateAreas(root);
  const jsonSize = strtoull(member(member(root, 'config'), 'json_size') as string);
  if (jsonSize !== BigInt(jsonAreaSize)) {
    fail(
      `config.json_size ${String(jsonSize)} does not match the JSON area size ${jsonAreaSize} of this header copy (hdr_size ${jsonAreaSize + 4096})`,
    );
  }
  if (Buffer.byteLength(JSON.stringify(root)) > jsonAreaSize) fail('the JSON does not fit its JSON area');
  validateKeyslotTypes(root);
}
