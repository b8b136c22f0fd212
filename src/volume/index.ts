// Volume layer: plaintext random access over an encrypted LUKS2 data segment, with range and image locks.
export { type SectorCipher, PlainCipher, InProcessXtsCipher } from './cipher.js';
export {
  Volume,
  type ConversionSplit,
  type VolumeOptions,
  type VolumeCounters,
  VOLUME_BATCH_BYTES,
} from './volume.js';
export { RangeLock, type ReleaseRange } from './range-lock.js';
export { acquireImageLock, processStartTime, type ImageLock } from './image-lock.js';
