// Resolves what a token or `--kek` names (platform:, ref:NAME, NAME, a legacy full URI) to a provider configured on this host.
//
// Trust rule: nothing read from an image names a module to load, a PIN file or a key file to open. A
// token names a provider reference (`ref:NAME`); providers.json, which only root can change, says what
// NAME means. A token from before references (a full `file:`/`pkcs11:` URI) is used only when its
// module, PIN source and key file match a configured provider exactly; the configured entry is then
// what is used. Anything else is refused before anything is loaded, opened or stat'ed.
import { DEFAULT_PROVIDERS } from '../errors/env.js';
import { AtrestError } from '../errors/index.js';
import { loadProviders, PROVIDER_NAME_RE, type ProviderTable } from './provider-config.js';
import {
  PROVIDER_TYPES,
  typeForScheme,
  type ProviderEntry,
  type RuntimeCredential,
  type SharedProviders,
} from './provider-types.js';
import { parsePkcs11Uri } from './pkcs11-uri.js';
import { redactUri, schemeOf, type KekProvider } from './kek.js';

export const REF_PREFIX = 'ref:';

/** Where a KEK name came from: an image's token (untrusted), or root's command line / configuration. */
export type KekOrigin = 'image' | 'cli';

export interface ResolvedKek {
  /** What a token stores for it: `platform:` or `ref:NAME`. */
  stored: string;
  /** The configured provider's name (null for the platform key). */
  name: string | null;
  /** What the provider is called with, from host configuration only (may carry a PIN: never log or store). */
  uri: string;
  provider: KekProvider;
}

export interface ResolverOptions {
  /** providers.json (default /etc/atrest/providers.json). */
  file?: string;
  /** An already loaded table (tests). */
  table?: ProviderTable;
  shared: SharedProviders;
  platform(): KekProvider;
  /** `--kek` given by root at open time: its PIN (pin-value) is used for the provider it names. */
  override?: string;
}

function show(text: string): string {
  return JSON.stringify(redactUri(text));
}

function hintFor(file: string, name: string, image: boolean): string {
  const examples = Object.values(PROVIDER_TYPES)
    .map((t) => t.example.replace(/NAME/g, name))
    .join(' or ');
  return (
    `add it to ${file}: {"providers": {"${name}": ${examples}}}` +
    (image ? ', or unlock with a recovery key (--key-file)' : '')
  );
}

/** Resolves KEK names against the host's provider configuration (loaded once, on first need). */
export class ProviderResolver {
  private table: ProviderTable | null;
  private loading: Promise<ProviderTable> | null = null;
  private readonly file: string;

  constructor(private readonly opts: ResolverOptions) {
    this.table = opts.table ?? null;
    this.file = opts.table?.path ?? opts.file ?? DEFAULT_PROVIDERS;
  }

  async providers(): Promise<ProviderTable> {
    if (this.table !== null) return this.table;
    this.loading ??= loadProviders(this.file);
    try {
      this.table = await this.loading;
    } finally {
      this.loading = null;
    }
    return this.table;
  }

  /**
   * What `text` names. From an image, only `platform:`, `ref:NAME` and full URIs matching a configured
   * provider exactly; from the command line also a bare NAME, and a PKCS#11 URI may bring a PIN
   * (pin-value) to use with the configured module, token and object.
   */
  async resolve(text: string, origin: KekOrigin): Promise<ResolvedKek> {
    const scheme = schemeOf(text);
    if (scheme === 'platform') {
      const provider = this.opts.platform();
      return {
        stored: 'platform:',
        name: null,
        uri: text === 'platform:default' ? text : 'platform:',
        provider,
      };
    }
    const { entry, cred } = await this.find(text, origin);
    let credential = cred;
    if (origin === 'image' && this.opts.override !== undefined) {
      // root's --kek for the same provider brings its PIN
      const o = await this.find(this.opts.override, 'cli').catch(() => null);
      if (o !== null && o.entry.name === entry.name) credential = o.cred;
    }
    const type = PROVIDER_TYPES[entry.type];
    if (type === undefined) throw new AtrestError('INTERNAL', `provider type ${entry.type} has no entry`);
    const bound = type.bind(entry, this.opts.shared, credential);
    return { stored: `${REF_PREFIX}${entry.name}`, name: entry.name, ...bound };
  }

  private async find(
    text: string,
    origin: KekOrigin,
  ): Promise<{ entry: ProviderEntry; cred: RuntimeCredential }> {
    const image = origin === 'image';
    const scheme = schemeOf(text);
    const bare = !image && scheme === '' && PROVIDER_NAME_RE.test(text);
    if (scheme === 'ref' || bare) {
      const name = bare ? text : text.slice(REF_PREFIX.length);
      if (!PROVIDER_NAME_RE.test(name)) {
        throw new AtrestError(
          image ? 'KEK_NOT_CONFIGURED' : 'USAGE',
          `${image ? "the image's key token names" : '--kek names'} an invalid key provider ${show(text)}`,
          {
            hint: image
              ? 'unlock with a recovery key (--key-file)'
              : 'give the NAME of a provider in providers.json',
          },
        );
      }
      const table = await this.providers();
      const entry = table.providers.get(name);
      if (entry === undefined) {
        throw new AtrestError(
          'KEK_NOT_CONFIGURED',
          image
            ? `the image's key token names key provider "${name}", which is not configured on this host (${table.path})`
            : `key provider "${name}" is not configured in ${table.path}`,
          { path: table.path, hint: hintFor(table.path, name, image) },
        );
      }
      return { entry, cred: {} };
    }
    const t = typeForScheme(scheme);
    if (t === undefined) {
      if (image) {
        throw new AtrestError(
          'KEK_NOT_CONFIGURED',
          `the image's key token names an unknown key provider ${show(text)}`,
          { hint: 'unlock with a recovery key (--key-file)' },
        );
      }
      throw new AtrestError('USAGE', `unknown key provider scheme ${scheme || show(text)}`, {
        hint: 'use platform:, or the NAME of a provider in providers.json',
      });
    }
    const [typeName, type] = t;
    const table = await this.providers();
    const entry = [...table.providers.values()]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .find((e) => e.type === typeName && type.matches(text, e));
    if (entry === undefined) {
      throw new AtrestError(
        'KEK_NOT_CONFIGURED',
        image
          ? `the image's key token names its KEK by a full URI ${show(text)} that matches no provider in ${table.path}; ` +
              'atrest never loads a module or opens a file that an image names'
          : `--kek ${show(text)} matches no provider in ${table.path}`,
        {
          path: table.path,
          hint: image
            ? `if this is your key, add a provider with exactly this ${typeName === 'pkcs11' ? 'module-path, token, object and pin-source' : typeName === 'kmip' ? 'name' : 'file path'} to ${table.path}; or unlock with a recovery key (--key-file)`
            : `add a provider for it to ${table.path} and give --kek NAME`,
        },
      );
    }
    const cred: RuntimeCredential = {};
    if (!image && scheme === 'pkcs11') {
      const pin = parsePkcs11Uri(text).pinValue;
      if (pin !== undefined) cred.pinValue = pin;
    }
    return { entry, cred };
  }
}
