// Online in-place conversion of served volumes: resume (or start) one at open, re-encrypt an open volume under a new key, run it in the background, pause/resume it.
// The service's only caller of openConversion/startReencrypt (starting or resuming a conversion with keys).
import type { Logger } from 'pino';
import type { PoolKey } from '../crypto/index.js';
import { AtrestError } from '../errors/index.js';
import { ConversionKeyringAdapter, readKeyFile, type KeyManager } from '../keys/index.js';
import {
  Converter,
  openConversion,
  PlainCipher,
  startReencrypt,
  type SectorCipher,
} from '../volume/index.js';
import { notOpen } from './not-open.js';
import { liveBinding, type Layout, type OpenVolume } from './open-volume.js';
import type { VolumeKeys } from './volume-keys.js';

/**
 * Default fixed cap of online conversions: none (0). The converter yields to the volume's users
 * adaptively (src/volume/yield-controller.ts); --max-rate adds a cap on top.
 */
export const DEFAULT_ONLINE_RATE = 0;

/** What resuming a conversion at open needs from the open request and the service. */
export interface OpenConvertingOptions {
  /** The detached header (only when the open request named one). */
  header?: string;
  /** Start encrypting a plaintext image (open --encrypt), not only resume. */
  start: boolean;
  km: KeyManager;
  /** Key file or passphrase bytes (the caller wipes them). */
  passphrase: Buffer | null;
  kek?: string;
  /** The volume's keys: both conversion keys are added here (the caller wipes them if opening fails). */
  keys: VolumeKeys;
  maxRate?: number;
  failPoint: (name: string) => void;
  log: Logger;
}

/**
 * Opens `image` when an in-place conversion is to resume there (or, asked, to start): unlocks it,
 * hands its keys to the pool and prepares the converter. Null when the image is not being converted.
 */
export async function openConverting(image: string, o: OpenConvertingOptions): Promise<Layout | null> {
  const { km, passphrase, keys } = o;
  // an in-place conversion to resume, or (only when asked) a plaintext image to encrypt
  const conv = await openConversion(image, {
    ...(o.header === undefined ? {} : { header: o.header }),
    // open --encrypt / "encrypt": true; a detached header is only made by atrest encrypt
    start: o.start,
    refuseRandom: true,
    keys: {
      keyring: new ConversionKeyringAdapter(km),
      ...(passphrase === null ? {} : { passphrase }),
      ...(o.kek === undefined ? {} : { kek: o.kek }),
    },
  });
  if (conv === null) return null;
  const volumeKey = conv.unlocked.volumeKey;
  const oldKeyBytes = conv.oldKey;
  try {
    const key = await keys.add(volumeKey);
    o.failPoint('open-key-added');
    const oldKey = oldKeyBytes === null ? null : await keys.add(oldKeyBytes);
    const { plan } = conv;
    const source: SectorCipher = oldKey ?? new PlainCipher();
    const converter = new Converter({
      image,
      header: conv.header,
      plan,
      target: key,
      source,
      maxRate: o.maxRate ?? DEFAULT_ONLINE_RATE,
    });
    const front = await converter.prepare();
    o.failPoint('open-prepared');
    o.log.info(
      { event: conv.started ? 'convert-start' : 'convert-resume', image, mode: plan.mode, front },
      conv.started ? 'encrypting a plaintext image in place' : 'resuming an in-place conversion',
    );
    return {
      uuid: conv.meta.uuid,
      keyslot: conv.unlocked.keyslot,
      dataOffset: plan.targetOffset,
      size: plan.size,
      sectorSize: plan.sectorSize,
      ivTweak: 0,
      keys,
      key,
      binding: liveBinding(conv.unlocked, km),
      header: conv.header,
      conversion: {
        converter,
        oldKey,
        split: {
          front,
          sourceOffset: plan.sourceOffset,
          sourceKey: oldKey?.keyRef() ?? null,
          sourceIvTweak: plan.sourceIvTweak,
        },
      },
    };
  } finally {
    volumeKey.fill(0);
    oldKeyBytes?.fill(0);
  }
}

/** Runs a volume's conversion in the background; at the end the header is in its final place. */
export function runConversion(v: OpenVolume, log: Logger): void {
  const c = v.conversion;
  if (c === null) return;
  c.done = c.converter.run().then(
    async (finished) => {
      if (!finished) return;
      if (c.converter.plan.sidecar) v.header = v.image;
      // a reencryption is over: the old key goes from the workers too
      const old = c.oldKey;
      c.oldKey = null;
      await v.keys.drop(old);
      log.info({ event: 'convert-done', volume: v.name, mode: c.converter.plan.mode }, 'conversion finished');
    },
    (err: unknown) => {
      log.error(
        {
          event: 'convert-failed',
          volume: v.name,
          code: (err as { code?: unknown }).code,
          err: String(err),
        },
        'conversion failed; the volume stays served, and the next open resumes it',
      );
    },
  );
}

/** The open volume `name` if it can be re-encrypted now; else the error saying why not. */
export function reencryptable(name: string, v: OpenVolume | undefined): OpenVolume {
  if (!v) throw notOpen(name);
  if (v.plain) throw new AtrestError('USAGE', `volume ${name} is a benchmark volume`);
  if (v.locked !== null) throw new AtrestError('LOCKED', `volume ${name} is locked (${v.locked.reason})`);
  if (v.readOnly) throw new AtrestError('READ_ONLY', `volume ${name} is open read-only`);
  if (v.conversion !== null && v.conversion.converter.progress().state !== 'done') {
    throw new AtrestError('REENCRYPT_IN_PROGRESS', `volume ${name} is already being converted`, {
      hint: 'see `atrest status`',
    });
  }
  return v;
}

export interface ReencryptOptions {
  /** Key files of the volume's passphrase keyslots (each gets a new one). */
  keyFiles: string[];
  maxRate?: number;
  /** Passphrases sent with the request (copied; the caller wipes its own). */
  passphrases: readonly Buffer[];
  /** The KeyManager of a volume opened without a KEK (one opened through a KEK reuses that one). */
  keyManager: () => KeyManager;
  failPoint: (name: string) => void;
  log: Logger;
}

/**
 * Re-encrypts an open volume under a new volume key, online: the header switches to the new key
 * (keyslots by the same methods), then the volume serves converted data with the new key and the
 * rest with the old one while the conversion runs. Returns new recovery passphrases to print once.
 * The caller checked reencryptable() and keeps the volume busy meanwhile.
 */
export async function reencrypt(v: OpenVolume, o: ReencryptOptions): Promise<{ recovery: Buffer[] }> {
  const name = v.name;
  const files: Buffer[] = [];
  let recoveryKeys: Buffer[] = []; // wiped here unless handed to the caller
  try {
    for (const p of o.passphrases) files.push(Buffer.from(p));
    for (const f of o.keyFiles) files.push(await readKeyFile(f));
    const km = v.binding?.km ?? o.keyManager();
    const header = v.header === v.image ? {} : { header: v.header };
    const keyring = new ConversionKeyringAdapter(km);
    const { recovery } = await startReencrypt(v.image, { ...header, keys: { keyring, keyFiles: files } });
    recoveryKeys = recovery.map((r) => r.passphrase);
    const conv = await openConversion(v.image, {
      ...header,
      start: false,
      keys: { keyring, keyFiles: files },
    });
    let newKey: PoolKey | null = null;
    let oldKey: PoolKey | null = null;
    let switched = false;
    let converter: Converter;
    try {
      if (conv === null || conv.oldKey === null)
        throw new AtrestError('INTERNAL', 'reencryption did not start');
      // both keys belong to the volume from here: a lock or close now wipes them too
      newKey = await v.keys.add(conv.unlocked.volumeKey);
      oldKey = await v.keys.add(conv.oldKey);
      const { plan } = conv;
      converter = new Converter({
        image: v.image,
        header: conv.header,
        plan,
        target: newKey,
        source: oldKey,
        maxRate: o.maxRate ?? DEFAULT_ONLINE_RATE,
      });
      const front = await converter.prepare();
      o.failPoint('reencrypt-prepared');
      await v.volume.beginConversion(newKey.keyRef(), {
        front,
        sourceOffset: plan.sourceOffset,
        sourceKey: oldKey.keyRef(),
        sourceIvTweak: plan.sourceIvTweak,
      });
      switched = true;
    } finally {
      conv?.unlocked.volumeKey.fill(0);
      conv?.oldKey?.fill(0);
      // not switched: the volume goes on with its current key; the next open resumes the reencryption
      if (!switched) await Promise.all([v.keys.drop(newKey), v.keys.drop(oldKey)]);
    }
    const previous = v.key;
    v.key = newKey;
    await v.keys.drop(previous); // the volume's own copy of the old key; the converter's goes at the end
    converter.attach(v.volume);
    v.conversion = { converter, done: null, oldKey };
    runConversion(v, o.log);
    o.log.info({ event: 'reencrypt-start', volume: name }, 're-encrypting under a new volume key');
    // the caller sends them as raw bytes and wipes them
    const out = recoveryKeys;
    recoveryKeys = [];
    return { recovery: out };
  } finally {
    for (const r of recoveryKeys) r.fill(0);
    for (const f of files) f.fill(0);
  }
}

/** Pauses or resumes the conversion of the open volume `name`. */
export function controlConversion(
  name: string,
  v: OpenVolume | undefined,
  action: 'pause' | 'resume',
  log: Logger,
): void {
  if (!v) throw notOpen(name);
  const c = v.conversion?.converter;
  if (c === undefined || c.progress().state === 'done') {
    throw new AtrestError('USAGE', `volume ${name} is not being converted`, {
      hint: 'see `atrest status`',
    });
  }
  if (action === 'pause') c.pause();
  else c.resume();
  log.info({ event: `convert-${action}`, volume: name }, `conversion ${action}d`);
}
