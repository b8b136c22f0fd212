// Option definitions shared by several commands, and the global options (--key-store, --providers, --fips) with their resolution.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { SECTOR_SIZES } from '../crypto/index.js';
import type { RuntimePaths } from '../daemon/paths.js';
import type { Globals } from './context.js';

/** The options every command takes. */
export function globalOptions(
  y: Argv,
): Argv<{ 'key-store': string | undefined; providers: string | undefined; fips: boolean }> {
  return y
    .option('key-store', {
      type: 'string',
      global: true,
      describe: 'platform key store directory (default /var/lib/atrest/keys)',
    })
    .option('providers', {
      type: 'string',
      global: true,
      describe: 'KEK provider configuration (default /etc/atrest/providers.json, env ATREST_PROVIDERS)',
    })
    .option('fips', {
      type: 'boolean',
      global: true,
      default: false,
      describe: "refuse to run unless Node's OpenSSL is in FIPS mode; PBKDF2 key slots only",
    });
}

/** The global options as given, resolved against the current directory and the runtime defaults. */
export function globalsOf(a: Record<string, unknown>, paths: RuntimePaths): Globals {
  const store = a['key-store'];
  const providers = a.providers;
  return {
    keyStore: typeof store === 'string' ? resolve(store) : paths.keyStore,
    fips: a.fips === true,
    providers: typeof providers === 'string' ? resolve(providers) : paths.providers,
  };
}

/** A sector size of a LUKS2 volume, as --sector-size gives it. */
export type SectorSize = 512 | 1024 | 2048 | 4096;

/** --sector-size (format, encrypt). */
export const sectorSizeOption = () =>
  ({ type: 'number', choices: [...SECTOR_SIZES], default: 4096 }) as const;

/** --header with the plain description (open, reencrypt, key IMAGE commands). */
export const headerOption = () => ({ type: 'string', describe: 'detached header file' }) as const;

/** --json: print the result as JSON (status, key list, key delete-platform-version). */
export const jsonOption = () => ({ type: 'boolean', default: false }) as const;

/** --encrypt (open, reencrypt). */
export const encryptOption = () =>
  ({
    type: 'boolean',
    default: false,
    describe: 'encrypt a plaintext image in place (it is rewritten) and serve it meanwhile',
  }) as const;

/** --kek of a command that unlocks an existing volume through its KEK (key rotate, key add-recovery). */
export const volumeKekOption = () =>
  ({
    type: 'string',
    describe: "the volume's KEK provider NAME, or its pkcs11: URI with a pin-value",
  }) as const;
