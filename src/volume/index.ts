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
export { DataLayout } from './data-layout.js';
export { Converter, type ConversionHost, type ConverterOptions } from './convert/converter.js';
export type { ConvertProgress } from './convert/progress.js';
export { nodeIo, type ConvFile, type ConvIo } from './convert/io.js';
export { findConversion, finishedConversion } from './convert/find.js';
export { finalizeConversion } from './convert/finalize.js';
export { adoptSidecar, sidecarPath } from './convert/sidecar.js';
export { DEFAULT_BATCH_BYTES, startEncrypt, type HeaderRequest } from './convert/plan.js';
export { unwrapOldKey, wrapOldKey } from './convert/old-key.js';
export {
  openConversion,
  startReencrypt,
  type ConversionKeyring,
  type ConversionKeys,
  type KeyslotToMove,
  type OpenedConversion,
  type UnlockedKey,
} from './convert/with-keys.js';
