// The daemon's configuration: /etc/atrest/volumes.json, validated with every problem reported at once.
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { VOLUME_NAME_RE } from './paths.js';
import { parseFuseBackend, type FuseBackend } from '../fuse/backend.js';

export const DEFAULT_CONFIG = '/etc/atrest/volumes.json';

/** How a configured volume is unlocked. */
export type KeySource =
  { type: 'platform' } | { type: 'kek'; uri: string } | { type: 'keyFile'; path: string };

export interface VolumeConfig {
  name: string;
  image: string;
  header?: string;
  key: KeySource;
  readOnly: boolean;
  loop: boolean;
  /** Mount the filesystem on the loop device here (needs loop). */
  mount?: { path: string; fstype: string; options?: string };
  /** Encrypt a plaintext image in place before serving it (default false: refuse an image without LUKS2). */
  encrypt: boolean;
}

export interface Config {
  path: string;
  volumes: VolumeConfig[];
  /** The FUSE backend the daemon serves volumes with (its --fuse-backend / ATREST_FUSE_BACKEND win). */
  fuseBackend?: FuseBackend;
}

const FSTYPE_RE = /^[a-z0-9][a-z0-9._-]{0,31}$/;
const VOLUME_KEYS = new Set(['name', 'image', 'header', 'key', 'readOnly', 'loop', 'mount', 'encrypt']);

/**
 * Validates a parsed configuration. Throws USAGE listing every problem, one per line, each naming
 * where it is (`volumes[1].image: ...`).
 */
export function parseConfig(value: unknown, path: string): Config {
  const problems: string[] = [];
  const out: VolumeConfig[] = [];
  let fuseBackend: FuseBackend | undefined;
  const obj = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!obj(value)) {
    problems.push('the top level must be an object: { "volumes": [ ... ] }');
  } else {
    for (const k of Object.keys(value))
      if (k !== 'volumes' && k !== 'fuseBackend') problems.push(`unknown field "${k}" at the top level`);
    if (value.fuseBackend !== undefined) {
      try {
        fuseBackend = parseFuseBackend(value.fuseBackend, 'fuseBackend');
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    const vols = value.volumes;
    if (!Array.isArray(vols)) problems.push('"volumes" must be an array');
    else {
      const names = new Map<string, number>();
      const images = new Map<string, number>();
      vols.forEach((v: unknown, i) => {
        const at = `volumes[${i}]`;
        if (!obj(v)) {
          problems.push(`${at}: must be an object`);
          return;
        }
        for (const k of Object.keys(v)) if (!VOLUME_KEYS.has(k)) problems.push(`${at}: unknown field "${k}"`);
        const absPath = (field: string, required: boolean): string | undefined => {
          const x = v[field];
          if (x === undefined && !required) return undefined;
          if (typeof x !== 'string' || !isAbsolute(x)) {
            problems.push(`${at}.${field}: must be an absolute path`);
            return undefined;
          }
          return x;
        };
        const bool = (field: string, dflt: boolean): boolean => {
          const x = v[field];
          if (x === undefined) return dflt;
          if (typeof x !== 'boolean') problems.push(`${at}.${field}: must be true or false`);
          return x === true;
        };
        const name = v.name;
        if (typeof name !== 'string' || !VOLUME_NAME_RE.test(name)) {
          problems.push(`${at}.name: must be 1-64 letters, digits, dots, dashes or underscores`);
        } else if (names.has(name)) {
          problems.push(`${at}.name: "${name}" is also volumes[${names.get(name) ?? 0}].name`);
        } else names.set(name, i);
        const image = absPath('image', true);
        if (image !== undefined) {
          if (images.has(image)) problems.push(`${at}.image: also volumes[${images.get(image) ?? 0}].image`);
          else images.set(image, i);
        }
        const header = absPath('header', false);
        let key: KeySource = { type: 'platform' };
        const k = v.key;
        if (k === undefined || k === 'platform') key = { type: 'platform' };
        else if (obj(k) && typeof k.kek === 'string' && Object.keys(k).length === 1)
          key = { type: 'kek', uri: k.kek };
        else if (obj(k) && typeof k.keyFile === 'string' && Object.keys(k).length === 1) {
          if (!isAbsolute(k.keyFile)) problems.push(`${at}.key.keyFile: must be an absolute path`);
          key = { type: 'keyFile', path: k.keyFile };
        } else {
          problems.push(`${at}.key: must be "platform", { "kek": "NAME" } or { "keyFile": "/path" }`);
        }
        const readOnly = bool('readOnly', false);
        const loop = bool('loop', false);
        const encrypt = bool('encrypt', false);
        if (encrypt && header !== undefined)
          problems.push(
            `${at}.encrypt: encrypting at open makes an attached header; with "header", encrypt the image once with atrest encrypt IMAGE --header FILE`,
          );
        let mount: VolumeConfig['mount'];
        if (v.mount !== undefined) {
          const m = v.mount;
          if (!obj(m) || typeof m.path !== 'string' || !isAbsolute(m.path)) {
            problems.push(`${at}.mount: must be { "path": "/abs/dir", "fstype": "ext4", "options": "..." }`);
          } else {
            const fstype = typeof m.fstype === 'string' ? m.fstype : m.fstype === undefined ? 'ext4' : '';
            if (!FSTYPE_RE.test(fstype))
              problems.push(`${at}.mount.fstype: must be a filesystem type like ext4`);
            if (m.options !== undefined && (typeof m.options !== 'string' || /[\s]/.test(m.options)))
              problems.push(`${at}.mount.options: must be a comma-separated list without spaces`);
            if (!loop) problems.push(`${at}.mount: needs "loop": true`);
            mount = {
              path: m.path,
              fstype,
              ...(typeof m.options === 'string' ? { options: m.options } : {}),
            };
          }
        }
        if (typeof name === 'string' && image !== undefined) {
          out.push({
            name,
            image,
            ...(header === undefined ? {} : { header }),
            key,
            readOnly,
            loop,
            ...(mount === undefined ? {} : { mount }),
            encrypt,
          });
        }
      });
    }
  }
  if (problems.length > 0) {
    throw new AtrestError(
      'USAGE',
      `configuration ${path} has ${problems.length} problem(s):\n${problems.map((p) => `  ${path}: ${p}`).join('\n')}`,
      {
        path,
        hint: 'fix them (see the README, "Configuration") and check with `atrest config check`',
      },
    );
  }
  return { path, volumes: out, ...(fuseBackend === undefined ? {} : { fuseBackend }) };
}

/** Reads and validates the configuration file; a missing file is an empty configuration. */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return { path, volumes: [] };
    throw fromSystemError(err, path, 'configuration');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AtrestError('USAGE', `configuration ${path} is not valid JSON: ${(err as Error).message}`, {
      path,
    });
  }
  return parseConfig(value, path);
}
