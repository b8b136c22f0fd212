// The LUKS2 on-disk format: binary headers (both copies), JSON metadata, keyslots (AF splitter + KDFs), digests; read, unlock, format, add/remove keyslots; an in-place conversion's plan token and progress record area.
//
// Public API (others code against this):
//   readLuks2(headerPath, { imagePath? }) → Luks2Metadata   validated view; falls back to the secondary
//       header when the primary is damaged (see meta.damaged / meta.warnings); the next write repairs both.
//   unlockVolumeKey(meta, passphrase, { keyslot? }) → { volumeKey, keyslot }   caller wipes volumeKey
//   resolvedDataSize(meta, imageFileSize) → bytes of data (resolves size "dynamic")
//   formatLuks2({ imagePath, headerPath?, dataSize, sectorSize?, label?, passphrase, pbkdf2Iterations?,
//       iterTimeMs?, kdf?, volumeKey? }) → { uuid, keyslot }
//   addKeyslot(meta, volumeKey, passphrase, { keyslot?, kdf?, priority? }) → keyslot id
//   addKeyslot(..., { token }) also writes a token linked to the new keyslot, in the same metadata update
//   removeKeyslot(meta, keyslot, { allowLast?, dropTokenTypes? })
//   setToken(meta, tokenId, json | null)   replace (re-wrap) or delete one token
//   formatLuks2({ ..., token }) writes token 0 linked to keyslot 0
//   planOf(meta) / markConverting(json, plan) / unmarkConverting(json)   an in-place conversion's plan token
//       and mandatory requirement (convert-token.ts); its progress record area: convert-record.ts (byte layout)
//   updateLuks2(meta, async (fresh) => ...)   a header change under the metadata lock, on the header
//       re-read under it (every command that changes a header goes through it; writeMetadata locks too)
// Errors (AtrestError codes): NOT_LUKS2, CORRUPT_HEADER, TRUNCATED_IMAGE, UNSUPPORTED,
// REENCRYPT_IN_PROGRESS, WRONG_KEY, FILE_EXISTS, FILE_NOT_FOUND, IMAGE_BUSY, NO_SPACE, USAGE.
// Messages name the file and never contain key material.
export {
  CONVERT_REQUIREMENT,
  readLuks2,
  resolvedDataSize,
  writeMetadata,
  type Luks2Metadata,
  type Luks2Volume,
} from './volume.js';
export { luksRemnants } from './remnants.js';
export { unlockVolumeKey } from './unlock.js';
export {
  formatLuks2,
  DEFAULT_DATA_OFFSET,
  DEFAULT_HDR_SIZE,
  DEFAULT_JSON_SIZE,
  DEFAULT_KEYSLOTS_SIZE,
  FIRST_KEYSLOT_OFFSET,
  VOLUME_KEY_SIZE,
  type FormatOptions,
} from './format.js';
export {
  addKeyslot,
  freeKeyslotArea,
  removeKeyslot,
  replaceVolumeKey,
  resolveKdf,
  setToken,
  wipeAreas,
  type AddKeyslotOptions,
  type KdfChoice,
  type NewKeyslot,
} from './keyslots.js';
export { verifyVolumeKey, keyslotUnusableReason } from './unlock.js';
export type { KeyslotInfo, TokenInfo, SegmentInfo, DigestInfo, JsonObject, Json } from './metadata.js';
export { LUKS2_MAGIC_PRIMARY } from './binary-header.js';
export { updateLuks2 } from './update.js';
export {
  CONVERT_TOKEN,
  markConverting,
  planOf,
  planToken,
  setPlanImageIno,
  unmarkConverting,
  type ConvertMode,
  type ConvertPlan,
  type Resilience,
} from './convert-token.js';
export {
  AREA_BYTES,
  AREA_OFFSET,
  decodeRecord,
  decodeRecordSlots,
  encodeRecord,
  MAX_BATCH_BYTES,
  RECORD_BYTES,
  recordOffset,
  sectorSums,
  SUM_BYTES,
  sumsDigest,
  sumsOffset,
  type ConvertRecord,
} from './convert-record.js';
export { withMetadataLock, metadataLockDir, setMetadataLockDir } from './metadata-lock.js';
