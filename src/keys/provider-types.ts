// The kinds of configured KEK provider (file, pkcs11, kmip): their providers.json fields, how to reach one, how a URI names one.
//
// One entry per type. A new kind (e.g. `kmip`: host, port, ca, cert, key, keyName) is one more entry in
// PROVIDER_TYPES: the configuration loader validates its fields from `fields`, and `bind` turns a
// configured entry into the provider and the reference it is called with.
import { normalize } from 'node:path';
import { parseFileUri } from './file-provider.js';
import { DEFAULT_KMIP_PORT, kmipName, type KmipKekProvider } from './kmip/provider.js';
import { parsePkcs11Uri } from './pkcs11-uri.js';
import type { Pkcs11Provider } from './pkcs11.js';
import type { KekProvider } from './kek.js';

/** How a field of a provider entry is validated. */
export type FieldKind = 'path' | 'label' | 'host' | 'port';

export interface FieldSpec {
  kind: FieldKind;
  required: boolean;
}

/** One validated entry of providers.json. Paths are absolute and normalised. */
export interface ProviderEntry {
  name: string;
  type: string;
  fields: Readonly<Record<string, string | number>>;
}

/** Provider instances a key manager shares between its entries (one PKCS#11 provider per process). */
export interface SharedProviders {
  file(): KekProvider;
  pkcs11(): Pkcs11Provider;
  kmip(): KmipKekProvider;
}

/** A credential given at run time by root (never read from an image): a PKCS#11 PIN. */
export interface RuntimeCredential {
  pinValue?: string;
}

export interface ProviderType {
  fields: Readonly<Record<string, FieldSpec>>;
  /** A one-line JSON example of an entry, for hints. */
  example: string;
  /** Problems between fields (e.g. two that exclude each other), one message each. */
  check?(fields: Readonly<Record<string, string | number>>): string[];
  /** The URI scheme of full URIs (legacy tokens, `--kek URI`) that can name an entry of this type. */
  scheme: string;
  /** Whether a full URI names this entry exactly (text only: nothing is opened, loaded or stat'ed). */
  matches(uri: string, entry: ProviderEntry): boolean;
  /** The provider and the URI it is called with, built from the configuration only. */
  bind(
    entry: ProviderEntry,
    shared: SharedProviders,
    cred: RuntimeCredential,
  ): { provider: KekProvider; uri: string };
}

function str(entry: ProviderEntry, field: string): string | undefined {
  const v = entry.fields[field];
  return typeof v === 'string' ? v : undefined;
}

function num(entry: ProviderEntry, field: string): number | undefined {
  const v = entry.fields[field];
  return typeof v === 'number' ? v : undefined;
}

/** RFC 7512 percent-encoding of an attribute value (UTF-8; keeps unreserved characters and '/'). */
function pct(value: string): string {
  let out = '';
  for (const b of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~/]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function samePath(a: string | undefined, b: string | undefined): boolean {
  return a !== undefined && b !== undefined && normalize(a) === normalize(b);
}

export const PROVIDER_TYPES: Readonly<Record<string, ProviderType>> = {
  file: {
    fields: { path: { kind: 'path', required: true } },
    example: '{"type": "file", "path": "/etc/atrest/NAME.key"}',
    scheme: 'file',
    matches(uri, entry) {
      try {
        return samePath(parseFileUri(uri), str(entry, 'path'));
      } catch {
        return false;
      }
    },
    bind(entry, shared) {
      return { provider: shared.file(), uri: `file:${str(entry, 'path') ?? ''}` };
    },
  },
  pkcs11: {
    fields: {
      module: { kind: 'path', required: true },
      token: { kind: 'label', required: true },
      object: { kind: 'label', required: true },
      pinSource: { kind: 'path', required: false },
    },
    example:
      '{"type": "pkcs11", "module": "/usr/lib/softhsm/libsofthsm2.so", "token": "LABEL", "object": "KEK", "pinSource": "/etc/atrest/NAME.pin"}',
    scheme: 'pkcs11',
    matches(uri, entry) {
      let p;
      try {
        p = parsePkcs11Uri(uri);
      } catch {
        return false;
      }
      if (!samePath(p.modulePath, str(entry, 'module'))) return false;
      if (p.token !== str(entry, 'token') || p.object !== str(entry, 'object')) return false;
      if (p.pinSource === undefined) return true; // names no file; the PIN comes from the configuration
      const pin = str(entry, 'pinSource');
      return pin !== undefined && (samePath(p.pinSource, pin) || p.pinSource === `file:${pin}`);
    },
    bind(entry, shared, cred) {
      const pinSource = str(entry, 'pinSource');
      let uri =
        `pkcs11:token=${pct(str(entry, 'token') ?? '')};object=${pct(str(entry, 'object') ?? '')}` +
        `?module-path=${pct(str(entry, 'module') ?? '')}`;
      if (cred.pinValue !== undefined) uri += `&pin-value=${pct(cred.pinValue)}`;
      else if (pinSource !== undefined) uri += `&pin-source=${pct(pinSource)}`;
      return { provider: shared.pkcs11(), uri };
    },
  },
  kmip: {
    fields: {
      host: { kind: 'host', required: true },
      port: { kind: 'port', required: false },
      ca: { kind: 'path', required: true },
      cert: { kind: 'path', required: true },
      key: { kind: 'path', required: true },
      keyName: { kind: 'label', required: false },
      uid: { kind: 'label', required: false },
    },
    example:
      '{"type": "kmip", "host": "kms.example.com", "port": 5696, "ca": "/etc/atrest/kmip-ca.pem", "cert": "/etc/atrest/kmip-client.pem", "key": "/etc/atrest/kmip-client.key", "keyName": "NAME"}',
    check(fields) {
      return fields.keyName !== undefined && fields.uid !== undefined
        ? ['give keyName (every version of a named key) or uid (one fixed key), not both']
        : [];
    },
    scheme: 'kmip',
    // `kmip:NAME` names the entry NAME: a name only, never a host or a file
    matches(uri, entry) {
      return kmipName(uri) === entry.name;
    },
    bind(entry, shared) {
      const keyName = str(entry, 'keyName');
      const uid = str(entry, 'uid');
      const provider = shared.kmip();
      const uri = provider.register({
        name: entry.name,
        host: str(entry, 'host') ?? '',
        port: num(entry, 'port') ?? DEFAULT_KMIP_PORT,
        ca: str(entry, 'ca') ?? '',
        cert: str(entry, 'cert') ?? '',
        key: str(entry, 'key') ?? '',
        ...(uid !== undefined ? { uid } : { keyName: keyName ?? entry.name }),
      });
      return { provider, uri };
    },
  },
};

/** The type whose full URIs use `scheme`, if any. */
export function typeForScheme(scheme: string): [string, ProviderType] | undefined {
  return Object.entries(PROVIDER_TYPES).find(([, t]) => t.scheme === scheme);
}
