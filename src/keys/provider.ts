// The KEK provider factory: picks the provider for a KEK URI by scheme (built-in platform: and file:, or extra ones).
// The interface every provider implements is in kek.ts.
import { AtrestError } from '../errors/index.js';
import { FileKekProvider } from './file-provider.js';
import { redactUri, schemeOf, type KekProvider } from './kek.js';
import { PlatformKekProvider, type PlatformStoreOptions } from './platform.js';

export interface ProviderOptions extends PlatformStoreOptions {
  /** Extra providers (e.g. pkcs11) consulted before the built-in ones, by scheme. */
  providers?: readonly KekProvider[];
}

/** Picks the provider for a KEK URI by its scheme. */
export function providerFor(uri: string, opts: ProviderOptions = {}): KekProvider {
  const scheme = schemeOf(uri);
  const extra = opts.providers?.find((p) => p.scheme === scheme);
  if (extra) return extra;
  if (scheme === 'platform') return new PlatformKekProvider(opts);
  if (scheme === 'file') return new FileKekProvider();
  throw new AtrestError('USAGE', `unknown key provider scheme ${scheme || JSON.stringify(redactUri(uri))}`, {
    hint: 'use platform:, file:/path/to/kek or a pkcs11: URI',
  });
}
