// Keyslot handlers by LUKS2 type name: 'luks2' = KDF(passphrase) → AES-XTS over the raw area (512-byte sectors from 0) → AF merge.
import { Buffer } from 'node:buffer';
import { XTS_KEY_SIZES, xtsInPlace } from '../crypto/xts.js';
import { afHashSupported, afMerge, afSplit } from './af.js';
import { kdfHandler } from './kdf-table.js';
import { getInt, getObject, getString, getU64, type JsonObject } from './metadata.js';

/** cryptsetup always uses 4000 stripes (LUKS_STRIPES), whatever the JSON says. */
export const AF_STRIPES = 4000;
/** The keyslot area is encrypted in 512-byte sectors, IVs counted from 0 at the area start. */
export const KEYSLOT_SECTOR = 512;

/** Reads or writes raw bytes of the metadata file (keyslot areas live there). */
export interface AreaIo {
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
}

export interface KeyslotHandler {
  /** Returns a reason string when this keyslot cannot be used here (throws InvalidMetadata if malformed). */
  check(ks: JsonObject): string | null;
  /** Recovers the stored key with `passphrase`, or a wrong key if the passphrase is wrong. */
  getKey(ks: JsonObject, passphrase: Uint8Array, io: AreaIo): Promise<Buffer>;
  /** Stores `volumeKey` under `passphrase` in the keyslot's area (its JSON is already complete). */
  setKey(ks: JsonObject, passphrase: Uint8Array, volumeKey: Uint8Array, io: AreaIo): Promise<void>;
}

/** Bytes of AF material for a key, rounded up to whole 512-byte sectors. */
export function afMaterialSize(keySize: number): number {
  return Math.ceil((keySize * AF_STRIPES) / KEYSLOT_SECTOR) * KEYSLOT_SECTOR;
}

interface Luks2Params {
  keySize: number;
  areaOffset: number;
  areaSize: number;
  areaKeySize: number;
  afHash: string;
  kdf: JsonObject;
}

function params(ks: JsonObject): Luks2Params {
  const af = getObject(ks, 'af', 'keyslot');
  const area = getObject(ks, 'area', 'keyslot');
  return {
    keySize: getInt(ks, 'key_size', 'keyslot', 1),
    areaOffset: getU64(area, 'offset', 'keyslot.area'),
    areaSize: getU64(area, 'size', 'keyslot.area'),
    areaKeySize: getInt(area, 'key_size', 'keyslot.area', 1),
    afHash: getString(af, 'hash', 'keyslot.af'),
    kdf: getObject(ks, 'kdf', 'keyslot'),
  };
}

const luks2Keyslot: KeyslotHandler = {
  check(ks) {
    const p = params(ks);
    const af = getObject(ks, 'af', 'keyslot');
    const area = getObject(ks, 'area', 'keyslot');
    const afType = getString(af, 'type', 'keyslot.af');
    if (afType !== 'luks1') return `anti-forensic splitter ${afType} is not supported`;
    const stripes = getInt(af, 'stripes', 'keyslot.af', 1);
    if (stripes !== AF_STRIPES) return `AF stripes ${stripes} is not supported (only 4000)`;
    if (!afHashSupported(p.afHash)) return `AF hash ${p.afHash} is not available`;
    const areaType = getString(area, 'type', 'keyslot.area');
    if (areaType !== 'raw') return `keyslot area type ${areaType} is not supported`;
    const enc = getString(area, 'encryption', 'keyslot.area');
    if (enc !== 'aes-xts-plain64' || !XTS_KEY_SIZES.includes(p.areaKeySize)) {
      return `keyslot cipher ${enc} with a ${p.areaKeySize * 8}-bit key is not supported (only aes-xts-plain64, 256 or 512 bits)`;
    }
    if (p.areaOffset % KEYSLOT_SECTOR !== 0)
      return `keyslot area offset ${p.areaOffset} is not sector aligned`;
    if (afMaterialSize(p.keySize) > p.areaSize) return 'keyslot area is too small for its key';
    const kdfType = getString(p.kdf, 'type', 'keyslot.kdf');
    const kdf = kdfHandler(kdfType);
    if (!kdf) return `KDF ${kdfType} is not supported`;
    return kdf.check(p.kdf);
  },

  async getKey(ks, passphrase, io) {
    const p = params(ks);
    const kdf = kdfHandler(getString(p.kdf, 'type', 'keyslot.kdf'));
    if (!kdf) throw new Error('unchecked keyslot');
    const material = await io.read(p.areaOffset, afMaterialSize(p.keySize));
    let derived: Buffer | undefined;
    try {
      derived = await kdf.derive(p.kdf, passphrase, p.areaKeySize);
      xtsInPlace('decrypt', derived, material, KEYSLOT_SECTOR, 0);
      return afMerge(material, p.keySize, AF_STRIPES, p.afHash);
    } finally {
      derived?.fill(0);
      material.fill(0);
    }
  },

  async setKey(ks, passphrase, volumeKey, io) {
    const p = params(ks);
    const kdf = kdfHandler(getString(p.kdf, 'type', 'keyslot.kdf'));
    if (!kdf) throw new Error('unchecked keyslot');
    const split = afSplit(volumeKey, AF_STRIPES, p.afHash);
    const material = Buffer.alloc(afMaterialSize(p.keySize));
    split.copy(material);
    split.fill(0);
    let derived: Buffer | undefined;
    try {
      derived = await kdf.derive(p.kdf, passphrase, p.areaKeySize);
      xtsInPlace('encrypt', derived, material, KEYSLOT_SECTOR, 0);
      await io.write(p.areaOffset, material);
    } finally {
      derived?.fill(0);
      material.fill(0);
    }
  },
};

/** The keyslot types we can unlock. ('reencrypt' keyslots are refused before we get here.) */
export const KEYSLOT_HANDLERS: Readonly<Record<string, KeyslotHandler>> = { luks2: luks2Keyslot };

export function keyslotHandler(type: string): KeyslotHandler | undefined {
  return Object.prototype.hasOwnProperty.call(KEYSLOT_HANDLERS, type) ? KEYSLOT_HANDLERS[type] : undefined;
}
