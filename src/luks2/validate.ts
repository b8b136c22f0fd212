// The invariants cryptsetup's LUKS2_hdr_validate (lib/luks2/luks2_json_metadata.c, 2.6) enforces on one header copy's JSON, in its order; run on read and before every write.
import { Buffer } from 'node:buffer';
import { isObject, type Json, type JsonObject } from './json-value.js';
import {
  arr,
  fail,
  has,
  int,
  mandatory,
  member,
  METADATA_SIZES,
  MAX_KEYSLOTS_SIZE,
  numbered,
  obj,
  ONLINE_REENCRYPT,
  reencryptCandidate,
  str,
  stringsOnly,
  strtoull,
  u64,
  U64_MAX,
  uint32,
} from './validate-json.js';
import { repairKeyslots, validateKeyslotTypes } from './validate-keyslots.js';

function isBackup(segment: Json | undefined): boolean {
  const flags = member(segment, 'flags');
  return Array.isArray(flags) && flags.some((f) => typeof f === 'string' && f.startsWith('backup-'));
}

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

/**
 * Checks the JSON metadata of a header copy whose JSON area is `jsonAreaSize` bytes, like cryptsetup
 * (which refuses to load a header that fails any of these). KDF parameters left over from another
 * KDF type are dropped from `root` first, as cryptsetup's repair does. Throws InvalidMetadata.
 */
export function validateLuks2Json(root: Json, jsonAreaSize: number): asserts root is JsonObject {
  if (!isObject(root)) fail('metadata is not a JSON object');
  repairKeyslots(root);
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
