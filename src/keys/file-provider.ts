// Customer-managed KEK in a key file: file:/path/to/kek, versions as sibling files.
//
// Convention (exact):
// - `file:/path/to/kek` (or `file:///path/to/kek`; percent-escapes decoded) names the KEK; the path is absolute.
// - Version 1 is the file `/path/to/kek` itself; version N >= 2 is `/path/to/kek.vN`. The newest version
//   whose file exists and is not revoked is current; missing versions in between are allowed.
// - Each file holds exactly 32 bytes (AES-256); other lengths fail with USAGE "KEK too short/long".
//   Files that others (not owner/group) can access are refused.
// - Revocation: a marker file `/path/to/kek.revoked` revokes every version; `/path/to/kek.vN.revoked`
//   (or `/path/to/kek.v1.revoked` for version 1) revokes one version. Removing a version file works too.
//   Removing the marker (restore()) makes the KEK available again.
import { constants } from 'node:fs';
import { lstat, open, readdir, unlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, normalize } from 'node:path';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { fsyncDir } from './durable-file.js';
import { readKekFile } from './platform.js';
import { keyUnavailable, type KekRef } from './kek.js';
import { LocalKekProvider } from './wrap.js';

/** Parses `file:/abs/path` or `file:///abs/path` into the absolute, normalised path. */
export function parseFileUri(uri: string): string {
  if (!uri.startsWith('file:')) throw new AtrestError('USAGE', `not a file: KEK URI: ${uri}`);
  let rest = uri.slice('file:'.length);
  if (rest.startsWith('//')) {
    if (!rest.startsWith('///')) {
      throw new AtrestError('USAGE', `file: KEK URI must not name a host: ${uri}`, {
        hint: 'use file:/path/to/kek',
      });
    }
    rest = rest.slice(2);
  }
  let path: string;
  try {
    path = decodeURIComponent(rest);
  } catch {
    throw new AtrestError('USAGE', `bad percent-escape in KEK URI ${uri}`);
  }
  if (!isAbsolute(path) || path.includes('\0') || path.endsWith('/')) {
    throw new AtrestError('USAGE', `file: KEK URI needs an absolute file path: ${uri}`, {
      hint: 'use file:/path/to/kek',
    });
  }
  return normalize(path);
}

function versionPath(base: string, version: number): string {
  return version === 1 ? base : `${base}.v${version}`;
}

/** Whether anything is at path (a dangling symlink too: a revocation marker fails closed). */
async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

export interface RevokeOptions {
  /** Revoke only this version; without it, every version of the KEK. */
  version?: number;
}

function markerPath(base: string, version: number | undefined): string {
  if (version === undefined) return `${base}.revoked`;
  return version === 1 ? `${base}.v1.revoked` : `${versionPath(base, version)}.revoked`;
}

export class FileKekProvider extends LocalKekProvider {
  readonly scheme = 'file';

  /** Versions whose files exist (revoked or not), ascending. */
  async versions(uri: string): Promise<number[]> {
    const base = parseFileUri(uri);
    const name = basename(base);
    let names: string[];
    try {
      names = await readdir(dirname(base));
    } catch (err) {
      throw fromSystemError(err, dirname(base), 'KEK directory');
    }
    const out: number[] = [];
    for (const n of names) {
      if (n === name) out.push(1);
      else if (n.startsWith(`${name}.v`)) {
        const m = /^([2-9]|[1-9][0-9]{1,8})$/.exec(n.slice(name.length + 2));
        if (m?.[1] !== undefined) out.push(Number(m[1]));
      }
    }
    return out.sort((a, b) => a - b);
  }

  private async revoked(base: string, version: number): Promise<boolean> {
    return (await exists(markerPath(base, undefined))) || (await exists(markerPath(base, version)));
  }

  async current(uri: string): Promise<KekRef> {
    const base = parseFileUri(uri);
    const vs = await this.versions(uri);
    for (let i = vs.length - 1; i >= 0; i--) {
      const v = vs[i];
      if (v !== undefined && !(await this.revoked(base, v)))
        return { uri: `file:${base}`, keyId: base, version: v };
    }
    throw keyUnavailable(uri, vs.length === 0 ? 'key file missing' : 'revoked');
  }

  protected async load(ref: KekRef): Promise<Buffer> {
    const base = parseFileUri(ref.uri);
    if (!Number.isInteger(ref.version) || ref.version < 1) {
      throw new AtrestError('USAGE', `bad KEK version ${ref.version} for ${ref.uri}`);
    }
    if (await this.revoked(base, ref.version)) throw keyUnavailable(`${ref.uri} v${ref.version}`, 'revoked');
    return readKekFile(versionPath(base, ref.version), `${ref.uri} v${ref.version}`, false);
  }

  /**
   * Revokes the KEK (all versions, or one) by creating a `.revoked` marker beside it: a new file
   * (O_CREAT|O_EXCL|O_NOFOLLOW: never through a symlink, never over another file), fsynced with its
   * directory. A marker that is already there as a regular file is kept (already revoked).
   */
  async revoke(uri: string, opts: RevokeOptions = {}): Promise<void> {
    const base = parseFileUri(uri);
    const p = markerPath(base, opts.version);
    let fh;
    try {
      fh = await open(
        p,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
    } catch (err) {
      if ((err as { code?: unknown } | null)?.code === 'EEXIST') {
        const st = await lstat(p).catch(() => null);
        if (st?.isFile() === true) return; // already revoked
        throw new AtrestError(
          'USAGE',
          `refusing revocation marker ${p}: it exists and is not a regular file`,
          {
            path: p,
            hint: `look at what put it there, remove it (rm ${p}) and revoke again`,
          },
        );
      }
      throw fromSystemError(err, p, 'revocation marker');
    }
    try {
      await fh.writeFile('revoked\n');
      await fh.sync();
    } catch (err) {
      throw fromSystemError(err, p, 'revocation marker');
    } finally {
      await fh.close();
    }
    await fsyncDir(dirname(p)).catch((err: unknown) => {
      throw fromSystemError(err, dirname(p), 'KEK directory');
    });
  }

  /** Removes a revocation marker written by revoke() (same options), durably. */
  async restore(uri: string, opts: RevokeOptions = {}): Promise<void> {
    const p = markerPath(parseFileUri(uri), opts.version);
    try {
      await unlink(p);
    } catch (err) {
      if ((err as { code?: unknown } | null)?.code !== 'ENOENT')
        throw fromSystemError(err, p, 'revocation marker');
      return;
    }
    await fsyncDir(dirname(p)).catch((err: unknown) => {
      throw fromSystemError(err, dirname(p), 'KEK directory');
    });
  }
}
