// cryptsetup's keyslot validation (LUKS2_keyslots_validate, luks2_keyslot_validate, reenc_keyslot_validate, 2.6) and its in-memory repair of leftover KDF fields.
import { isObject, type Json, type JsonObject } from './json-value.js';
import {
  fail,
  int,
  mandatory,
  member,
  obj,
  ONLINE_REENCRYPT,
  reencryptCandidate,
  str,
  strtoull,
  uint32,
} from './validate-json.js';

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

export function validateKeyslotTypes(root: JsonObject): void {
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

/** LUKS2_hdr_repair: drops leftover KDF fields of every luks2 key slot (what cryptsetup repairs in memory). */
export function repairKeyslots(root: JsonObject): void {
  const keyslots = member(root, 'keyslots');
  if (isObject(keyslots)) {
    for (const ks of Object.values(keyslots)) if (member(ks, 'type') === 'luks2') repairKdf(ks);
  }
}
