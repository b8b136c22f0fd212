// Volume layer: plaintext random access over an encrypted LUKS2 data segment, range and image locks, and in-place conversion (encrypt, reencrypt).
export { type SectorCipher, PlainCipher, InProcessXtsCipher } from './cipher.js';
export {
  Volume,
  type ConversionSplit,
  type VolumeOptions,
  type VolumeCounters,
  type ForegroundCounters,
} from './volume.js';
export type { DiskIo, DiskIoDescriptor } from './disk-io.js';
export { openDiskIo } from './disk-io-open.js';
export { SharedRangeLock, LOCK_BYTES, LOCK_ENTRIES, type LockHandle } from './shared-range-lock.js';
export { RangeLock, type ReleaseRange } from './range-lock.js';
export { acquireImageLock, processStartTime, type ImageLock } from './image-lock.js';
export {
  AREA_BYTES,
  adoptSidecar,
  Converter,
  CONVERT_TOKEN,
  DEFAULT_BATCH_BYTES,
  findConversion,
  finalizeConversion,
  finishedConversion,
  growForConversion,
  markConverting,
  nodeIo,
  planOf,
  ShiftedCipher,
  sourceLayoutCipher,
  sidecarPath,
  unwrapOldKey,
  wrapOldKey,
  startEncrypt,
  unmarkConverting,
  type ConvertMode,
  type ConvertPlan,
  type ConvertProgress,
  type ConverterOptions,
  type ConvFile,
  type ConvIo,
  type ConversionHost,
  type HeaderRequest,
} from './convert.js';
export {
  openConversion,
  startReencrypt,
  type ConversionKeyring,
  type ConversionKeys,
  type KeyslotToMove,
  type OpenedConversion,
  type UnlockedKey,
} from './convert/with-keys.js';
