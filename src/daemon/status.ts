// What `atrest status` shows of a volume: an open one (state, counters, conversion, encryption, key-server outage) or a configured one whose open failed.
import { keySourceOf, redactUri } from '../keys/index.js';
import type { VolumeConfig } from './config.js';
import type { OpenVolume } from './open-volume.js';
import type { EncryptionStatus, VolumeStatus } from './protocol.js';
import type { Outage } from './unreachable-grace.js';

/** Where status learns what the volume itself does not hold. */
export interface StatusContext {
  /** Whether the volume comes from the configuration file. */
  configured: boolean;
  /** The key-server outage of an open volume, if any (asked only while it is not locked). */
  outage: (v: OpenVolume) => Outage | undefined;
}

/** The status of an open volume. */
export function statusOf(v: OpenVolume, ctx: StatusContext): VolumeStatus {
  const c = v.volume.counters;
  const conv = v.conversion?.converter.progress();
  const state =
    v.locked !== null
      ? 'locked'
      : conv !== undefined && conv.state !== 'done'
        ? `${conv.mode === 'encrypt' ? 'encrypting' : 're-encrypting'} ${conv.percent}%${conv.state === 'paused' ? ' (paused)' : conv.state === 'failed' ? ' (failed)' : ''}`
        : 'served';
  return {
    name: v.name,
    state,
    mountPoint: v.mountPoint,
    configured: ctx.configured,
    diskPath: v.diskPath,
    image: v.image,
    header: v.header,
    uuid: v.uuid,
    cipher: 'aes-xts-plain64',
    sectorSize: v.sectorSize,
    size: v.size,
    keyslot: v.keyslot,
    readOnly: v.readOnly,
    loopDevice: v.loopDevice,
    fuseBackend: v.disk.backend,
    bytesRead: c.bytesRead,
    bytesWritten: c.bytesWritten,
    openedAt: v.openedAt.toISOString(),
    encryption: encryptionOf(v, ctx),
    ...(v.conversion === null ? {} : { conversion: v.conversion.converter.progress() }),
  };
}

function encryptionOf(v: OpenVolume, ctx: StatusContext): EncryptionStatus {
  const b = v.binding;
  const e: EncryptionStatus = {
    enabled: !v.plain,
    cipher: v.plain ? 'none (benchmark only)' : 'aes-xts-plain64',
    keySource: keySourceOf(b),
    kek: b === null ? null : redactUri(b.kek),
    kekVersion: b === null ? null : b.version,
    keyslot: b === null ? v.keyslot : b.keyslot,
    locked: v.locked !== null,
  };
  const outage = v.locked === null ? ctx.outage(v) : undefined;
  if (outage !== undefined) {
    e.keyServerUnreachable = {
      since: new Date(outage.since).toISOString(),
      locksAt: new Date(outage.locksAt).toISOString(),
      detail: outage.detail,
    };
  }
  if (v.locked !== null) {
    e.lockedReason = v.locked.reason;
    e.lockedAt = v.locked.at.toISOString();
  }
  return e;
}

/** The status of a configured volume that is not open: its last open failed with `error`. */
export function failedStatus(name: string, spec: VolumeConfig, error: string): VolumeStatus {
  return {
    name,
    state: 'failed',
    error,
    diskPath: '',
    image: spec.image,
    header: spec.header ?? spec.image,
    uuid: '',
    cipher: 'aes-xts-plain64',
    sectorSize: 0,
    size: 0,
    keyslot: -1,
    readOnly: spec.readOnly,
    loopDevice: null,
    mountPoint: null,
    configured: true,
    bytesRead: 0,
    bytesWritten: 0,
    openedAt: '',
    encryption: {
      enabled: true,
      cipher: 'aes-xts-plain64',
      keySource:
        spec.key.type === 'platform' ? 'platform' : spec.key.type === 'kek' ? 'customer' : 'passphrase',
      kek: null,
      kekVersion: null,
      keyslot: -1,
      locked: false,
    },
  };
}
