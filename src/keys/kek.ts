// The KEK provider interface and what every provider shares: KekRef, KekProvider, URI redaction, scheme, KEY_UNAVAILABLE.
// Imports nothing of keys/, so concrete providers (platform, file, pkcs11, kmip) and the factory (provider.ts) can all use it.
import { AtrestError } from '../errors/index.js';

/** Names one version of a KEK. `uri` never carries secrets (see redactUri). */
export interface KekRef {
  uri: string;
  keyId: string;
  version: number;
}

export interface KekProvider {
  readonly scheme: string;
  /** How wrap() protects a secret, recorded in the token ('aes256-kwp', 'pkcs11-aes256-gcm'). */
  readonly wrapAlg: string;
  /** Newest available version of the KEK named by uri. */
  current(uri: string): Promise<KekRef>;
  /** Wraps a secret under that KEK version (returns opaque bytes). */
  wrap(ref: KekRef, secret: Uint8Array): Promise<Buffer>;
  /** Unwraps; KEY_UNAVAILABLE when the KEK is gone/revoked, WRONG_KEY when it does not match. */
  unwrap(ref: KekRef, wrapped: Uint8Array): Promise<Buffer>;
  /** Is this KEK version still usable right now? (for the revocation checker) */
  available(ref: KekRef): Promise<boolean>;
  /**
   * A key server reached over the network (kmip): when it cannot be reached, available() throws a
   * "key server unreachable" error and the daemon gives its volumes a grace period.
   */
  readonly network?: boolean;
}

const SECRET_ATTRS = new Set(['pin-value', 'pin-source']);

/** Replaces the values of pin-value and pin-source attributes (path or query part) with '***'. */
export function redactUri(uri: string): string {
  return uri.replace(/([;?&])([A-Za-z0-9_-]+)=([^;?&#]*)/g, (m, sep: string, name: string) =>
    SECRET_ATTRS.has(name.toLowerCase()) ? `${sep}${name}=***` : m,
  );
}

/**
 * The URI as stored in a LUKS2 token: `pin-value` attributes removed (a PIN never reaches the image);
 * `pin-source` (a path, not the PIN) and `module-path` stay so the daemon can reach the key again.
 */
export function storedUri(uri: string): string {
  let out = uri.replace(/([;?&])pin-value=[^;?&#]*/gi, (_m, sep: string) => (sep === '?' ? '?' : ''));
  out = out.replace(/\?&/, '?').replace(/\?(#|$)/, '$1');
  return out;
}

/** The scheme of a KEK URI ('platform', 'file', 'pkcs11', ...), lower case. */
export function schemeOf(uri: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(uri);
  return m?.[1] === undefined ? '' : m[1].toLowerCase();
}

/** The error every provider throws when a KEK is gone or revoked. */
export function keyUnavailable(uri: string, why: string): AtrestError {
  return new AtrestError('KEY_UNAVAILABLE', `key revoked or unavailable: ${redactUri(uri)} (${why})`, {
    hint: 'restore access to the key-encryption key, or unlock with a recovery keyslot',
  });
}
