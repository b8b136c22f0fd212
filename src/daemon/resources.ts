// What every open volume shares: the crypto pool and the PKCS#11/KMIP provider sessions (made on first use, closed once), and its KeyManagers.
import { CryptoPool, type CryptoPoolOptions } from '../crypto/index.js';
import { envSet } from '../errors/env.js';
import {
  KeyManager,
  KmipKekProvider,
  newKmipProvider,
  Pkcs11Provider,
  type AuditSink,
} from '../keys/index.js';
import type { RuntimePaths } from './paths.js';
import type { KeyPool } from './volume-keys.js';

export interface SharedResourcesOptions {
  audit: AuditSink;
  /** FIPS mode for every volume (the daemon's --fips). */
  fips?: boolean;
  /** Default platform key store. */
  keyStore?: string;
  /** Tests: the KMIP provider every volume shares (not closed here: the test owns it). */
  kmip?: KmipKekProvider;
  /** Tests: the crypto pool to use (default: one made on first use from the environment). */
  pool?: KeyPool & { destroy(): Promise<void> };
}

/** What a volume's KeyManager may differ in from the daemon's defaults (an open request's options). */
export interface KeyManagerOverrides {
  keyStore?: string;
  providers?: string;
  fips?: boolean;
  /** A KEK URI that overrides the token's (open --kek). */
  kek?: string;
}

export class SharedResources {
  private pool: (KeyPool & { destroy(): Promise<void> }) | null;
  private pkcs11: Pkcs11Provider | null = null;
  private kmip: KmipKekProvider | null = null;

  constructor(
    private readonly paths: RuntimePaths,
    private readonly opts: SharedResourcesOptions,
  ) {
    this.pool = opts.pool ?? null;
  }

  /** The crypto pool every volume's keys go to (made on first use). */
  getPool(): KeyPool {
    this.pool ??= new CryptoPool(poolOptionsFromEnv());
    return this.pool;
  }

  private getPkcs11(): Pkcs11Provider {
    this.pkcs11 ??= new Pkcs11Provider();
    return this.pkcs11;
  }

  /** One KMIP provider (its server connections) for every volume, like the PKCS#11 sessions. */
  private getKmip(): KmipKekProvider {
    this.kmip ??= this.opts.kmip ?? newKmipProvider();
    return this.kmip;
  }

  /** A KeyManager for volume `name`: the daemon's key store, providers and FIPS mode unless overridden. */
  keyManager(name: string, o: KeyManagerOverrides = {}): KeyManager {
    return new KeyManager({
      keyStoreDir: o.keyStore ?? this.opts.keyStore ?? this.paths.keyStore,
      providersFile: o.providers ?? this.paths.providers,
      audit: (e) => this.opts.audit({ ...e, name }),
      fips: o.fips === true || this.opts.fips === true,
      pkcs11: this.getPkcs11(),
      kmip: this.getKmip(),
      ...(o.kek === undefined ? {} : { kekOverride: o.kek }),
    });
  }

  /** Stops the worker pool, then closes the provider sessions (after every volume is closed). */
  async close(): Promise<void> {
    if (this.pool) {
      await this.pool.destroy();
      this.pool = null;
    }
    this.pkcs11?.close();
    this.pkcs11 = null;
    if (this.opts.kmip === undefined) await this.kmip?.close();
    this.kmip = null;
  }
}

/** Crypto pool tuning for operators and benchmarks: ATREST_CRYPTO_WORKERS, ATREST_CRYPTO_INLINE_MAX. */
function poolOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): CryptoPoolOptions {
  const opts: CryptoPoolOptions = {};
  const workers = envSet('ATREST_CRYPTO_WORKERS', env);
  if (workers !== undefined) opts.workers = Number(workers);
  const inlineMax = envSet('ATREST_CRYPTO_INLINE_MAX', env);
  if (inlineMax !== undefined) opts.inlineMaxBytes = Number(inlineMax);
  return opts;
}
