// The host's KEK provider configuration (/etc/atrest/providers.json): root-owned, validated with every problem reported.
//
//   { "providers": {
//       "hsm1":  { "type": "pkcs11", "module": "/usr/lib/softhsm/libsofthsm2.so", "token": "atrest",
//                  "object": "kek-1", "pinSource": "/etc/atrest/hsm1.pin" },
//       "kek-a": { "type": "file", "path": "/etc/atrest/kek-a.key" },
//       "fleet": { "type": "kmip", "host": "kms.example.com", "port": 5696, "ca": "/etc/atrest/kmip-ca.pem",
//                  "cert": "/etc/atrest/kmip-client.pem", "key": "/etc/atrest/kmip-client.key", "keyName": "fleet" } } }
//
// Tokens in images store only a provider *name* (`ref:hsm1`); this file, which only root can change,
// says which module to load, which PIN file and which key file to open, which key server to reach. Fields per type: provider-types.ts.
import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { dirname, isAbsolute, normalize } from 'node:path';
import { DEFAULT_PROVIDERS } from '../errors/env.js';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { PROVIDER_TYPES, type FieldSpec, type ProviderEntry } from './provider-types.js';
import { checkTrusted } from './trusted-file.js';

/** Provider names: what tokens store after `ref:` and what `--kek NAME` takes. */
export const PROVIDER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Names that would read as something else on the command line. */
const RESERVED = new Set(['platform', 'ref', 'file', 'pkcs11', 'kmip']);
const MAX_BYTES = 1024 * 1024;

export interface ProviderTable {
  /** The file it was read from (for messages). */
  path: string;
  providers: ReadonlyMap<string, ProviderEntry>;
}

function obj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkField(spec: FieldSpec, v: unknown): string | null {
  switch (spec.kind) {
    case 'path':
      return typeof v === 'string' && isAbsolute(v) && !v.includes('\0') && !v.endsWith('/')
        ? null
        : 'must be an absolute file path';
    case 'label':
      // eslint-disable-next-line no-control-regex
      return typeof v === 'string' && v.length > 0 && v.length <= 255 && !/[\u0000-\u001f]/.test(v)
        ? null
        : 'must be a non-empty label';
    case 'host':
      return typeof v === 'string' && /^[A-Za-z0-9.:[\]-]{1,253}$/.test(v)
        ? null
        : 'must be a host name or address';
    case 'port':
      return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535
        ? null
        : 'must be a port number';
  }
}

/** Validates a parsed providers.json. Throws USAGE listing every problem, one per line. */
export function parseProviders(value: unknown, path: string): ProviderTable {
  const problems: string[] = [];
  const out = new Map<string, ProviderEntry>();
  const known = Object.keys(PROVIDER_TYPES).join(', ');
  if (!obj(value)) {
    problems.push('the top level must be an object: { "providers": { "NAME": { "type": ... } } }');
  } else {
    for (const k of Object.keys(value))
      if (k !== 'providers') problems.push(`unknown field "${k}" at the top level`);
    const list = value.providers;
    if (!obj(list)) problems.push('"providers" must be an object of NAME: { "type": ... }');
    else {
      for (const [name, e] of Object.entries(list)) {
        const at = `providers[${JSON.stringify(name)}]`;
        if (!PROVIDER_NAME_RE.test(name) || RESERVED.has(name.toLowerCase())) {
          problems.push(
            `${at}: the name must be 1-64 letters, digits, dots, dashes or underscores (not ${[...RESERVED].join(', ')})`,
          );
          continue;
        }
        if (!obj(e)) {
          problems.push(`${at}: must be an object with a "type"`);
          continue;
        }
        const type = e.type;
        const spec = typeof type === 'string' ? PROVIDER_TYPES[type] : undefined;
        if (spec === undefined || typeof type !== 'string') {
          problems.push(
            `${at}.type: ${typeof type === 'string' ? `unknown type "${type}"` : 'missing'} (known: ${known})`,
          );
          continue;
        }
        const fields: Record<string, string | number> = {};
        let ok = true;
        for (const k of Object.keys(e)) {
          if (k !== 'type' && !(k in spec.fields)) {
            problems.push(
              `${at}: unknown field "${k}" for type ${type} (fields: ${Object.keys(spec.fields).join(', ')})`,
            );
            ok = false;
          }
        }
        for (const [f, fs] of Object.entries(spec.fields)) {
          const v = e[f];
          if (v === undefined) {
            if (fs.required) {
              problems.push(`${at}.${f}: missing (required for type ${type})`);
              ok = false;
            }
            continue;
          }
          const why = checkField(fs, v);
          if (why !== null) {
            problems.push(`${at}.${f}: ${why}`);
            ok = false;
            continue;
          }
          fields[f] = fs.kind === 'path' ? normalize(v as string) : (v as string | number);
        }
        if (ok) {
          const cross = spec.check?.(fields) ?? [];
          for (const c of cross) problems.push(`${at}: ${c}`);
          if (cross.length === 0) out.set(name, { name, type, fields });
        }
      }
    }
  }
  if (problems.length > 0) {
    throw new AtrestError(
      'USAGE',
      `provider configuration ${path} has ${problems.length} problem(s):\n${problems.map((p) => `  ${path}: ${p}`).join('\n')}`,
      { path, hint: 'fix them (see the README, "Customer keys") and check with `atrest config check`' },
    );
  }
  return { path, providers: out };
}

/** Reads and validates the provider configuration; a missing file is an empty configuration. */
export async function loadProviders(path: string = DEFAULT_PROVIDERS): Promise<ProviderTable> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return { path, providers: new Map() };
    throw fromSystemError(err, path, 'provider configuration');
  }
  let text: string;
  try {
    const st = await fh.stat();
    if (!st.isFile())
      throw new AtrestError('USAGE', `provider configuration ${path} is not a regular file`, { path });
    checkTrusted(path, st, 'provider configuration');
    const dir = dirname(path);
    checkTrusted(dir, await stat(dir), 'provider configuration directory');
    if (st.size > MAX_BYTES)
      throw new AtrestError('USAGE', `provider configuration ${path} is larger than 1 MiB`, { path });
    text = await fh.readFile('utf8');
  } catch (err) {
    throw fromSystemError(err, path, 'provider configuration');
  } finally {
    await fh.close();
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AtrestError(
      'USAGE',
      `provider configuration ${path} is not valid JSON: ${(err as Error).message}`,
      {
        path,
      },
    );
  }
  return parseProviders(value, path);
}
