// Reaching the KEK of a binding: a KEK name resolved to its provider (PKCS#11/KMIP sessions kept), secrets wrapped and unwrapped.
import { randomBytes } from 'node:crypto';
import { AtrestError } from '../errors/index.js';
import type { JsonObject } from '../luks2/index.js';
import { FileKekProvider } from './file-provider.js';
import type { KekProvider, KekRef } from './kek.js';
import { newKmipProvider } from './kmip/connect.js';
import type { KmipKekProvider } from './kmip/provider.js';
import { SECRET_BYTES } from './keyslots.js';
import { Pkcs11Provider } from './pkcs11.js';
import type { PlatformKekProvider } from './platform.js';
import type { ProviderTable } from './provider-config.js';
import { ProviderResolver, type KekOrigin, type ResolvedKek } from './provider-refs.js';
import { bindingTokenJson, TOKEN_CMK, TOKEN_PLATFORM, type BindingType, type KekBinding } from './tokens.js';

export interface KekAccessOptions {
  /** See KeyManagerOptions: kekOverride, providersFile, providerTable, pkcs11, kmip. */
  kekOverride?: string;
  providersFile?: string;
  providerTable?: ProviderTable;
  pkcs11?: Pkcs11Provider;
  kmip?: KmipKekProvider;
}

/** A fresh keyslot secret and the binding token wrapping it (linked to no keyslot yet). */
export interface NewBinding {
  secret: Buffer;
  token: JsonObject;
  ref: KekRef;
}

/** A binding's unwrapped secret, with the KEK reference and provider it came through. */
export interface UnwrappedBinding {
  secret: Buffer;
  ref: KekRef;
  provider: KekProvider;
  stored: string;
}

/** The providers one key manager uses: shared PKCS#11/KMIP providers are created on demand and closed by close(). */
export class KekAccess {
  private pkcs11: Pkcs11Provider | null;
  private readonly ownsPkcs11: boolean;
  private kmip: KmipKekProvider | null;
  private readonly resolver: ProviderResolver;

  constructor(
    private readonly opts: KekAccessOptions,
    platform: () => PlatformKekProvider,
  ) {
    this.pkcs11 = opts.pkcs11 ?? null;
    this.ownsPkcs11 = opts.pkcs11 === undefined;
    this.kmip = opts.kmip ?? null;
    const file = new FileKekProvider();
    this.resolver = new ProviderResolver({
      ...(opts.providersFile === undefined ? {} : { file: opts.providersFile }),
      ...(opts.providerTable === undefined ? {} : { table: opts.providerTable }),
      ...(opts.kekOverride === undefined ? {} : { override: opts.kekOverride }),
      shared: {
        file: () => file,
        pkcs11: () => (this.pkcs11 ??= new Pkcs11Provider()),
        kmip: () => (this.kmip ??= newKmipProvider()),
      },
      platform,
    });
  }

  /** Closes PKCS#11 sessions and KMIP connections opened here (not the ones given in the options). */
  close(): void {
    if (this.ownsPkcs11) this.pkcs11?.close();
    this.pkcs11 = null;
    if (this.opts.kmip === undefined) void this.kmip?.close();
    this.kmip = null;
  }

  /** The provider for a KEK name (see KeyManager.resolve). */
  resolve(kek: string, origin: KekOrigin): Promise<ResolvedKek> {
    return this.resolver.resolve(kek, origin);
  }

  /** A fresh secret wrapped under the newest version of `kek`; the token stores `platform:` or `ref:NAME`. */
  async newBinding(kek: string): Promise<NewBinding> {
    const r = await this.resolve(kek, 'cli');
    const type: BindingType = r.name === null ? TOKEN_PLATFORM : TOKEN_CMK;
    const ref = await r.provider.current(r.uri);
    const secret = randomBytes(SECRET_BYTES);
    try {
      const wrapped = await r.provider.wrap(ref, secret);
      const stored = { ...ref, uri: r.stored };
      return { secret, token: bindingTokenJson(type, stored, r.provider.wrapAlg, wrapped), ref: stored };
    } catch (err) {
      secret.fill(0);
      throw err;
    }
  }

  /** Unwraps a binding's secret through its provider. Caller wipes. */
  async unwrapBinding(b: KekBinding): Promise<UnwrappedBinding> {
    const { uri, provider, stored } = await this.resolve(b.kek, 'image');
    if (provider.wrapAlg !== b.wrapAlg) {
      throw new AtrestError(
        'UNSUPPORTED',
        `token ${b.tokenId} was wrapped with ${b.wrapAlg}, but ${stored} uses ${provider.wrapAlg}`,
        { hint: 'unlock with a recovery key' },
      );
    }
    const ref: KekRef = { uri, keyId: b.keyId, version: b.version };
    return { secret: await provider.unwrap(ref, b.wrapped), ref, provider, stored };
  }
}
