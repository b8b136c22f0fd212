// RFC 7512 PKCS#11 URIs: the subset atrest uses to name a KEK inside an HSM token.
import { AtrestError } from '../errors/index.js';

/** The attributes of a `pkcs11:` URI that atrest understands. */
export interface Pkcs11Uri {
  /** CKA_LABEL of the token (path attribute `token`). */
  token?: string;
  /** CKA_LABEL of the key object (path attribute `object`). */
  object?: string;
  /** CKA_ID of the key object (path attribute `id`), raw bytes. */
  id?: Buffer;
  /** Object class (path attribute `type`): only `secret-key` makes sense for a KEK. */
  type?: 'secret-key' | 'private' | 'public' | 'cert' | 'data';
  /** Query attribute `module-path`: the PKCS#11 shared library to load. */
  modulePath?: string;
  /** Query attribute `pin-value`: the user PIN, in the URI itself. */
  pinValue?: string;
  /** Query attribute `pin-source`: a file (path or `file:` URI) whose content is the PIN. */
  pinSource?: string;
}

const PATH_ATTRS = new Set([
  'token',
  'object',
  'id',
  'type',
  'manufacturer',
  'model',
  'serial',
  'library-description',
  'library-manufacturer',
  'library-version',
  'slot-description',
  'slot-id',
  'slot-manufacturer',
]);
const QUERY_ATTRS = new Set(['module-path', 'module-name', 'pin-value', 'pin-source']);
const TYPES = new Set(['secret-key', 'private', 'public', 'cert', 'data']);

function usage(message: string): AtrestError {
  return new AtrestError('USAGE', message, {
    hint: 'use a URI like pkcs11:token=LABEL;object=KEK?module-path=/path/to/module.so&pin-source=/path/to/pin',
  });
}

/** Percent-decodes one attribute value to bytes; rejects malformed escapes. */
function decodeBytes(raw: string, attr: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as string;
    if (c === '%') {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw usage(`PKCS#11 URI: bad percent-encoding in ${attr}`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(c, 'utf8')) out.push(b);
    }
  }
  return Buffer.from(out);
}

function decodeString(raw: string, attr: string): string {
  const bytes = decodeBytes(raw, attr);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw usage(`PKCS#11 URI: ${attr} is not valid UTF-8`);
  }
}

/** Parses a `pkcs11:` URI (RFC 7512). Throws AtrestError 'USAGE' with a one-line message. */
export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (!/^pkcs11:/i.test(uri)) throw usage('not a PKCS#11 URI (must start with pkcs11:)');
  const rest = uri.slice('pkcs11:'.length);
  const q = rest.indexOf('?');
  const pathPart = q < 0 ? rest : rest.slice(0, q);
  const queryPart = q < 0 ? '' : rest.slice(q + 1);
  if (pathPart.includes('#') || queryPart.includes('#'))
    throw usage('PKCS#11 URI: fragments are not allowed');
  const out: Pkcs11Uri = {};
  const seen = new Set<string>();

  for (const part of pathPart === '' ? [] : pathPart.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw usage(`PKCS#11 URI: malformed path attribute "${part}"`);
    const name = part.slice(0, eq).toLowerCase();
    const raw = part.slice(eq + 1);
    if (!PATH_ATTRS.has(name) && !name.startsWith('x-'))
      throw usage(`PKCS#11 URI: unknown path attribute "${name}"`);
    if (seen.has(name)) throw usage(`PKCS#11 URI: duplicate attribute "${name}"`);
    seen.add(name);
    switch (name) {
      case 'token':
        out.token = decodeString(raw, name);
        break;
      case 'object':
        out.object = decodeString(raw, name);
        break;
      case 'id':
        out.id = decodeBytes(raw, name);
        break;
      case 'type': {
        const t = decodeString(raw, name);
        if (!TYPES.has(t)) throw usage(`PKCS#11 URI: unknown object type "${t}"`);
        out.type = t as Pkcs11Uri['type'];
        break;
      }
      default:
        break; // recognised by RFC 7512 but not used by atrest
    }
  }

  for (const part of queryPart === '' ? [] : queryPart.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw usage(`PKCS#11 URI: malformed query attribute "${redactPart(part)}"`);
    const name = part.slice(0, eq).toLowerCase();
    const raw = part.slice(eq + 1);
    if (!QUERY_ATTRS.has(name) && !name.startsWith('x-'))
      throw usage(`PKCS#11 URI: unknown query attribute "${name}"`);
    if (seen.has(name)) throw usage(`PKCS#11 URI: duplicate attribute "${name}"`);
    seen.add(name);
    switch (name) {
      case 'module-path':
        out.modulePath = decodeString(raw, name);
        break;
      case 'pin-value':
        out.pinValue = decodeString(raw, name);
        break;
      case 'pin-source':
        out.pinSource = decodeString(raw, name);
        break;
      case 'module-name':
        throw usage('PKCS#11 URI: module-name is not supported; give module-path instead');
      default:
        break;
    }
  }
  if (out.pinValue !== undefined && out.pinSource !== undefined)
    throw usage('PKCS#11 URI: give pin-value or pin-source, not both');
  if (out.type !== undefined && out.type !== 'secret-key')
    throw usage(`PKCS#11 URI: a KEK must be a secret-key object, not ${out.type}`);
  return out;
}

function redactPart(part: string): string {
  const eq = part.indexOf('=');
  if (eq < 0) return part;
  const name = part.slice(0, eq).toLowerCase();
  return name === 'pin-value' || name === 'pin-source' ? `${part.slice(0, eq)}=***` : part;
}

/**
 * Returns the URI with the values of `pin-value` and `pin-source` replaced by `***`, safe to show
 * and log. Works on malformed URIs too (it never throws).
 */
export function redactPkcs11Uri(uri: string): string {
  const q = uri.indexOf('?');
  if (q < 0) return uri;
  const hash = uri.indexOf('#', q);
  const query = hash < 0 ? uri.slice(q + 1) : uri.slice(q + 1, hash);
  const tail = hash < 0 ? '' : uri.slice(hash);
  return `${uri.slice(0, q + 1)}${query.split('&').map(redactPart).join('&')}${tail}`;
}

/** The URI without any query attributes (no module path, no PIN): the identity of the key. */
export function stripPkcs11Query(uri: string): string {
  const q = uri.indexOf('?');
  return q < 0 ? uri : uri.slice(0, q);
}
