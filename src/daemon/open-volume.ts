// The records the volume service keeps: one open volume (OpenVolume), the KEK it depends on, what unlocking hands to open.
// Types only (plus liveBinding), so the service's files (service, unlock, online-conversion, key-watch, status,
// reconcile) can all name them without importing each other.
import type { PoolKey } from '../crypto/index.js';
import type { BindingType, KekProvider, KekRef, KeyManager, Unlocked } from '../keys/index.js';
import type { FuseDisk } from '../fuse/index.js';
import type { ConversionSplit, Converter, ImageLock, Volume } from '../volume/index.js';
import type { VolumeKeys } from './volume-keys.js';

/** The KEK an open volume depends on, kept to check it and re-wrap when a new version appears. */
export interface LiveBinding {
  type: BindingType;
  tokenId: number;
  keyslot: number;
  /** Stored URI (no PIN). */
  kek: string;
  keyId: string;
  version: number;
  /** Effective reference (may carry a PIN: never log it). */
  ref: KekRef;
  provider: KekProvider;
  km: KeyManager;
}

/** What opening needs from the key side: where the data is and how to en/decrypt it. */
export interface Layout {
  uuid: string;
  keyslot: number;
  dataOffset: number;
  size: number;
  sectorSize: number;
  ivTweak: number;
  /** Every key the volume holds in the pool (the caller wipes them all if opening fails later). */
  keys: VolumeKeys;
  /** The key it encrypts with (null: benchmark plaintext). */
  key: PoolKey | null;
  binding: LiveBinding | null;
  /** The file holding the header (a sidecar while an attached-header encryption runs). */
  header: string;
  conversion: { converter: Converter; split: ConversionSplit; oldKey: PoolKey | null } | null;
}

/** One volume the service serves. */
export interface OpenVolume {
  name: string;
  diskPath: string;
  image: string;
  header: string;
  uuid: string;
  sectorSize: number;
  size: number;
  keyslot: number;
  readOnly: boolean;
  loopDevice: string | null;
  openedAt: Date;
  volume: Volume;
  /** Every key of the volume in the pool: its current key and a conversion's other key. */
  keys: VolumeKeys;
  /** The key the volume encrypts with now (a reencryption replaces it). */
  key: PoolKey | null;
  disk: FuseDisk;
  lock: ImageLock;
  binding: LiveBinding | null;
  plain: boolean;
  locked: { reason: string; at: Date } | null;
  conversion: { converter: Converter; done: Promise<void> | null; oldKey: PoolKey | null } | null;
  /** Where the daemon mounted the loop device's filesystem (configured volumes), or null. */
  mountPoint: string | null;
}

/** What the KEK checker keeps of the binding a volume was unlocked through (null: a passphrase). */
export function liveBinding(unlocked: Unlocked, km: KeyManager): LiveBinding | null {
  const b = unlocked.binding;
  if (b === null || unlocked.ref === null || unlocked.provider === null) return null;
  return {
    type: b.type,
    tokenId: b.tokenId,
    keyslot: b.keyslot,
    kek: b.kek,
    keyId: b.keyId,
    version: b.version,
    ref: unlocked.ref,
    provider: unlocked.provider,
    km,
  };
}
