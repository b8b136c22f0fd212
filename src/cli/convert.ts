// Foreground in-place conversions of a closed image (`atrest encrypt`, `atrest reencrypt`): lock it, open the conversion, run it with a progress bar.
import { resolve } from 'node:path';
import { CryptoPool } from '../crypto/index.js';
import { envSet } from '../errors/env.js';
import { AtrestError } from '../errors/index.js';
import { ConversionKeyringAdapter, type KeyManager } from '../keys/index.js';
import type { RuntimePaths } from '../daemon/paths.js';
import {
  acquireImageLock,
  Converter,
  findConversion,
  finishedConversion,
  openConversion,
  PlainCipher,
  startReencrypt,
  type OpenedConversion,
} from '../volume/index.js';
import { NEW_RECOVERY_KEY } from './render/messages.js';
import { progressPrinter } from './render/progress.js';
import { formatBytes } from './size.js';
import { writeSecretLine } from './secret-output.js';

/** A test hook: ATREST_TEST_KILL_AT=point:n SIGKILLs this process the n-th time it reaches point. */
export function killPointFromEnv(env: NodeJS.ProcessEnv = process.env): ((name: string) => void) | undefined {
  const spec = envSet('ATREST_TEST_KILL_AT', env);
  if (!spec) return undefined;
  const [point, nth = '1'] = spec.split(':');
  let count = 0;
  return (name: string) => {
    if (name === point && ++count === Number(nth)) process.kill(process.pid, 'SIGKILL');
  };
}

/**
 * Runs an opened conversion in this process with its own crypto pool and a progress printer; the keys
 * go to the pool once and are wiped from it (and from conv) at the end, whatever happens. Returns the
 * seconds it took.
 */
async function runForeground(
  image: string,
  conv: OpenedConversion,
  label: 'encrypt' | 'reencrypt',
  maxRate: number,
): Promise<number> {
  const pool = new CryptoPool();
  try {
    const target = await pool.addKey(conv.unlocked.volumeKey);
    conv.unlocked.volumeKey.fill(0);
    const source = conv.oldKey === null ? null : await pool.addKey(conv.oldKey);
    conv.oldKey?.fill(0);
    const printer = progressPrinter(label);
    const killPoint = killPointFromEnv();
    const converter = new Converter({
      image,
      header: conv.header,
      plan: conv.plan,
      target,
      source: source ?? new PlainCipher(),
      maxRate,
      onProgress: (p) => printer.update(p),
      ...(killPoint ? { killPoint } : {}),
    });
    const t0 = Date.now();
    try {
      await converter.run();
    } finally {
      printer.end();
      await source?.wipe();
      await target.wipe();
    }
    return (Date.now() - t0) / 1000;
  } finally {
    await pool.destroy();
  }
}

export interface EncryptArgs {
  image: string;
  header?: string | undefined;
  sectorSize: 512 | 1024 | 2048 | 4096;
  passphrase?: Buffer;
  kek?: string | undefined;
  maxRate: number;
  iterTimeMs?: number | undefined;
}

/** Encrypts (or finishes encrypting) an image in place, in this process. */
export async function encryptOffline(paths: RuntimePaths, km: KeyManager, a: EncryptArgs): Promise<void> {
  const image = resolve(a.image);
  const header = a.header === undefined ? undefined : resolve(a.header);
  const lock = await acquireImageLock(image, paths.lockDir);
  try {
    const conv = await openConversion(image, {
      ...(header === undefined ? {} : { header }),
      sectorSize: a.sectorSize,
      start: true,
      keys: {
        keyring: new ConversionKeyringAdapter(km),
        ...(a.passphrase === undefined ? {} : { passphrase: a.passphrase }),
        ...(a.kek === undefined ? {} : { kek: a.kek }),
        ...(a.iterTimeMs === undefined ? {} : { iterTimeMs: a.iterTimeMs }),
      },
    });
    if (conv === null) {
      if (await finishedConversion(header ?? image)) {
        console.log(`${image} is encrypted: the earlier run had finished`);
        return;
      }
      throw new AtrestError('USAGE', `${image} is already an encrypted LUKS2 volume`, {
        path: image,
        hint: 'to move it to a new volume key use `atrest reencrypt`',
      });
    }
    if (conv.plan.mode !== 'encrypt') {
      throw new AtrestError('USAGE', `${image} is being re-encrypted, not encrypted`, {
        hint: 'resume it with `atrest reencrypt`',
      });
    }
    console.error(
      `${conv.started ? 'encrypting' : 'resuming the encryption of'} ${image} in place ` +
        `(${conv.plan.resilience === 'datashift' ? 'header attached: the image grows by 16 MiB' : 'detached header'})`,
    );
    const secs = await runForeground(image, conv, 'encrypt', a.maxRate);
    console.log(
      `encrypted ${image}: ${formatBytes(conv.plan.size)} in ${secs.toFixed(1)} s; it is now a LUKS2 volume (aes-xts-plain64)`,
    );
  } finally {
    await lock.release();
  }
}

export interface ReencryptArgs {
  image: string;
  header?: string | undefined;
  keyFiles: Buffer[];
  maxRate: number;
  iterTimeMs?: number | undefined;
}

/** Re-encrypts (or resumes re-encrypting) a closed volume under a new volume key, in this process. */
export async function reencryptOffline(paths: RuntimePaths, km: KeyManager, a: ReencryptArgs): Promise<void> {
  const image = resolve(a.image);
  const header = a.header === undefined ? undefined : resolve(a.header);
  const hdr = header === undefined ? {} : { header };
  const lock = await acquireImageLock(image, paths.lockDir);
  try {
    const found = await findConversion(image, header);
    if (found !== null && found.plan.mode === 'encrypt') {
      throw new AtrestError('USAGE', `${image} is being encrypted in place, not re-encrypted`, {
        hint: 'finish that first with `atrest encrypt IMAGE`',
      });
    }
    const killPoint = killPointFromEnv();
    const keyring = new ConversionKeyringAdapter(km);
    if (found === null) {
      const keys = {
        keyring,
        keyFiles: a.keyFiles,
        ...(a.iterTimeMs === undefined ? {} : { iterTimeMs: a.iterTimeMs }),
      };
      const { recovery } = await startReencrypt(image, { ...hdr, keys, ...(killPoint ? { killPoint } : {}) });
      try {
        for (const r of recovery) {
          console.error(NEW_RECOVERY_KEY);
          await writeSecretLine(r.passphrase);
        }
      } finally {
        for (const r of recovery) r.passphrase.fill(0);
      }
    }
    const conv = await openConversion(image, {
      ...hdr,
      start: false,
      keys: { keyring, keyFiles: a.keyFiles },
    });
    if (conv === null || conv.oldKey === null)
      throw new AtrestError('INTERNAL', `no reencryption of ${image} found`);
    console.error(
      `${found === null ? 're-encrypting' : 'resuming the re-encryption of'} ${image} under a new volume key`,
    );
    const secs = await runForeground(image, conv, 'reencrypt', a.maxRate);
    console.log(
      `re-encrypted ${image}: ${formatBytes(conv.plan.size)} in ${secs.toFixed(1)} s; the old volume key is gone`,
    );
  } finally {
    await lock.release();
  }
}
