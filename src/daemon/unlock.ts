// Unlocking a volume for open: read the header, unlock the volume key (passphrase or key file, else its platform/customer key token) and hand it to the crypto pool once.
import type { Logger } from 'pino';
import { requireFips } from '../crypto/index.js';
import { envFlag } from '../errors/env.js';
import { AtrestError } from '../errors/index.js';
import { readKeyFile, type KeyManager } from '../keys/index.js';
import { readLuks2, resolvedDataSize } from '../luks2/index.js';
import { openConverting } from './online-conversion.js';
import { liveBinding, type Layout } from './open-volume.js';
import { refuseNotLuks2 } from './plaintext-refusal.js';
import type { OpenRequest } from './protocol.js';
import type { KeyManagerOverrides } from './resources.js';
import { VolumeKeys, type KeyPool } from './volume-keys.js';

/** What unlocking needs of the service. */
export interface UnlockContext {
  log: Logger;
  /** The daemon's --fips (a request asking for FIPS on a daemon without it checks Node's OpenSSL). */
  fips: boolean;
  /** The crypto pool the volume's keys go to. */
  pool: () => KeyPool;
  /** A KeyManager for volume `name` (the daemon's key store and providers unless the request overrides them). */
  keyManager: (name: string, o: KeyManagerOverrides) => KeyManager;
  failPoint: (name: string) => void;
}

/**
 * Reads the LUKS2 header, unlocks the volume key (key file, else the volume's platform/customer key
 * token) and hands it to the crypto pool (once). An in-place conversion to resume (or, asked, to
 * start) is opened by online-conversion.ts instead. Every key added is wiped again if unlocking fails.
 */
export async function unlock(
  ctx: UnlockContext,
  req: OpenRequest,
  image: string,
  header: string,
  imageSize: number,
): Promise<Layout> {
  let passphrase: Buffer | null = null;
  let volumeKey: Buffer | null = null;
  // every key handed to the pool from here is wiped if a later step of unlocking fails
  const keys = new VolumeKeys(ctx.pool);
  let ok = false;
  if (req.fips === true && !ctx.fips) requireFips();
  const km = ctx.keyManager(req.name, {
    keyStore: req.keyStore,
    providers: req.providers,
    fips: req.fips === true,
    kek: req.kek,
  });
  try {
    if (req.passphrase !== undefined) passphrase = Buffer.from(req.passphrase);
    else if (req.keyFile !== undefined) passphrase = await readKeyFile(req.keyFile);
    const conv = await openConverting(image, {
      ...(req.header === undefined ? {} : { header }),
      // open --encrypt / "encrypt": true; a detached header is only made by atrest encrypt
      start: req.header === undefined && req.encrypt === true,
      km,
      passphrase,
      kek: req.kek,
      keys,
      maxRate: req.maxRate,
      failPoint: ctx.failPoint,
      log: ctx.log,
    });
    if (conv !== null) {
      ok = true;
      return conv;
    }
    const meta = await readLuks2(header, { imagePath: image }).catch((err: unknown) => {
      throw refuseNotLuks2(err, image, req);
    });
    for (const w of meta.warnings) ctx.log.warn({ event: 'header', image, header }, w);
    const size = resolvedDataSize(meta, imageSize);
    const unlocked = await km
      .unlock(meta, passphrase === null ? {} : { passphrase })
      .catch((err: unknown) => {
        ctx.log.warn(
          { event: 'unlock-failed', image, code: (err as { code?: unknown }).code },
          'unlock failed',
        );
        throw err;
      });
    volumeKey = unlocked.volumeKey;
    const key = await keys.add(volumeKey);
    ctx.failPoint('open-key-added');
    ok = true;
    return {
      uuid: meta.uuid,
      keyslot: unlocked.keyslot,
      dataOffset: meta.dataOffset,
      size,
      sectorSize: meta.sectorSize,
      ivTweak: meta.ivTweak,
      keys,
      key,
      binding: liveBinding(unlocked, km),
      header,
      conversion: null,
    };
  } finally {
    passphrase?.fill(0);
    volumeKey?.fill(0);
    if (!ok) await keys.wipeAll();
  }
}

/**
 * Bench only: serves a raw image without encryption so `npm run bench` can compare the same daemon
 * with and without crypto. Refused unless this daemon was started with ATREST_BENCH_PLAIN=1.
 */
export function benchPlainLayout(ctx: UnlockContext, image: string, imageSize: number): Layout {
  if (!envFlag('ATREST_BENCH_PLAIN')) {
    throw new AtrestError('USAGE', 'unencrypted serving exists only for benchmarks', {
      hint: 'atrest always encrypts; open a LUKS2 volume',
    });
  }
  ctx.log.warn({ event: 'bench-plain', image }, 'serving an UNENCRYPTED image for a benchmark');
  const size = imageSize - (imageSize % 4096);
  return {
    uuid: '',
    keyslot: -1,
    dataOffset: 0,
    size,
    sectorSize: 4096,
    ivTweak: 0,
    keys: new VolumeKeys(ctx.pool),
    key: null,
    binding: null,
    header: image,
    conversion: null,
  };
}
