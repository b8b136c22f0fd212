// The platform key store: host-held KEK versions as 32-byte files in a root-only directory.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_KEY_STORE } from '../errors/env.js';
import { AtrestError, fromSystemError } from '../errors/index.js';
import { fsyncDir, mkdirDurable, STALE_TEMP_MS, type KillPoint } from './durable-file.js';
import { keyUnavailable, type KekRef } from './kek.js';
import { KEK_BYTES, LocalKekProvider } from './wrap.js';

const PREFIX = 'platform-kek.v';
const KEY_ID_PREFIX = 'platform-kek@';
/** File naming the store: a random id, not a secret, so a volume moved to another host says so. */
const STORE_ID_FILE = 'store-id';
const STORE_ID_RE = /^[0-9a-f]{16}$/;
const VERSION_RE = /^platform-kek\.v([1-9][0-9]{0,8})$/;

export interface PlatformStoreOptions {
  /** Key store directory (default /var/lib/atrest/keys, i.e. --key-store). */
  keyStoreDir?: string;
}

function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

function mode(m: number): string {
  return (m & 0o777).toString(8).padStart(3, '0');
}

/** Refuses a store directory or key file that others can reach or that someone else owns. */
function checkOwnerAndMode(path: string, st: { mode: number; uid: number }, isDir: boolean): void {
  const what = isDir ? 'key store' : 'key file';
  if (st.uid !== uid()) {
    throw new AtrestError(
      'USAGE',
      `refusing ${what} ${path}: owned by uid ${st.uid}, not by the running uid ${uid()}`,
      { path, hint: `fix with: chown ${uid()} ${path}` },
    );
  }
  if ((st.mode & 0o077) !== 0) {
    throw new AtrestError(
      'USAGE',
      `refusing ${what} ${path}: mode ${mode(st.mode)} lets group or others access it`,
      { path, hint: `fix with: chmod ${isDir ? '700' : '600'} ${path}` },
    );
  }
}

/**
 * Reads a 32-byte KEK file. ENOENT -> KEY_UNAVAILABLE; wrong size -> USAGE. With `strict`, the file
 * must be a regular file owned by the running uid with no group/other access. Caller wipes the result.
 */
export async function readKekFile(path: string, uri: string, strict: boolean): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === 'ENOENT') throw keyUnavailable(uri, 'key file missing');
    throw fromSystemError(err, path, 'KEK file');
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new AtrestError('USAGE', `KEK file ${path} is not a regular file`, { path });
    if (strict) checkOwnerAndMode(path, st, false);
    else if ((st.mode & 0o007) !== 0) {
      throw new AtrestError(
        'USAGE',
        `refusing KEK file ${path}: mode ${mode(st.mode)} lets others access it`,
        {
          path,
          hint: `fix with: chmod 600 ${path}`,
        },
      );
    }
    if (st.size !== KEK_BYTES) {
      throw new AtrestError(
        'USAGE',
        `KEK file ${path} is ${st.size} bytes: KEK too ${st.size < KEK_BYTES ? 'short' : 'long'}, need 32`,
        { path, hint: 'a KEK file holds exactly 32 random bytes, e.g. head -c 32 /dev/urandom > FILE' },
      );
    }
    const key = Buffer.alloc(KEK_BYTES);
    let off = 0;
    while (off < KEK_BYTES) {
      const { bytesRead } = await fh.read(key, off, KEK_BYTES - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    if (off !== KEK_BYTES) {
      key.fill(0);
      throw new AtrestError('USAGE', `KEK file ${path} changed while reading: KEK too short`, { path });
    }
    return key;
  } finally {
    await fh.close();
  }
}

/**
 * Writes `key` to `path` durably without ever replacing an existing file: temp file (0600, O_EXCL),
 * fsync, link into place (EEXIST if taken), unlink temp, fsync the directory.
 */
export async function writeKeyFileExclusive(dir: string, name: string, key: Uint8Array): Promise<void> {
  const tmp = join(dir, `.${name}.tmp-${randomBytes(6).toString('hex')}`);
  const fh = await open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    try {
      await fh.chmod(0o600);
      await fh.writeFile(key);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, join(dir, name));
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dir);
}

function parseUri(uri: string): void {
  if (uri !== 'platform:' && uri !== 'platform:default') {
    throw new AtrestError('USAGE', `bad platform key URI ${JSON.stringify(uri)}`, {
      hint: 'use platform: or platform:default',
    });
  }
}

/** The host's platform-managed KEK, versioned as files platform-kek.v1, .v2, ... in the key store. */
export class PlatformKekProvider extends LocalKekProvider {
  readonly scheme = 'platform';
  readonly dir: string;
  private ready = false;
  private id: string | null = null;

  constructor(opts: PlatformStoreOptions = {}) {
    super();
    this.dir = opts.keyStoreDir ?? DEFAULT_KEY_STORE;
  }

  /** Creates the store directory (0700) if missing, then checks its owner and mode. */
  private async ensureStore(): Promise<void> {
    if (this.ready) return;
    try {
      await mkdirDurable(this.dir, 0o700);
      const st = await lstat(this.dir);
      if (!st.isDirectory())
        throw new AtrestError('USAGE', `key store ${this.dir} is not a directory`, { path: this.dir });
      checkOwnerAndMode(this.dir, st, true);
    } catch (err) {
      throw fromSystemError(err, this.dir, 'key store');
    }
    this.ready = true;
  }

  /** Versions present in the store, ascending. */
  async versions(): Promise<number[]> {
    await this.ensureStore();
    const names = await readdir(this.dir);
    const out: number[] = [];
    for (const n of names) {
      const m = VERSION_RE.exec(n);
      if (m?.[1] !== undefined) out.push(Number(m[1]));
    }
    return out.sort((a, b) => a - b);
  }

  /** The store's key id, `platform-kek@<store id>`; the id is created with the store. */
  async keyId(): Promise<string> {
    if (this.id !== null) return `${KEY_ID_PREFIX}${this.id}`;
    await this.ensureStore();
    const path = join(this.dir, STORE_ID_FILE);
    for (let attempt = 0; attempt < 2 && this.id === null; attempt++) {
      try {
        const text = (await readFile(path, 'utf8')).trim();
        if (!STORE_ID_RE.test(text)) {
          throw new AtrestError('CORRUPT_HEADER', `key store id file ${path} is damaged`, {
            path,
            hint: 'restore the key store from a backup',
          });
        }
        this.id = text;
      } catch (err) {
        if ((err as { code?: unknown } | null)?.code !== 'ENOENT')
          throw fromSystemError(err, path, 'key store');
        try {
          await writeKeyFileExclusive(
            this.dir,
            STORE_ID_FILE,
            Buffer.from(`${randomBytes(8).toString('hex')}\n`),
          );
        } catch (e) {
          if ((e as { code?: unknown } | null)?.code !== 'EEXIST')
            throw fromSystemError(e, path, 'key store');
        }
      }
    }
    if (this.id === null) throw new AtrestError('INTERNAL', `could not create ${path}`);
    return `${KEY_ID_PREFIX}${this.id}`;
  }

  private async ref(version: number): Promise<KekRef> {
    return { uri: 'platform:', keyId: await this.keyId(), version };
  }

  private path(version: number): string {
    return join(this.dir, `${PREFIX}${version}`);
  }

  /** Newest version; creates v1 on first use. */
  async current(uri = 'platform:'): Promise<KekRef> {
    parseUri(uri);
    const vs = await this.versions();
    const newest = vs[vs.length - 1];
    if (newest !== undefined) return await this.ref(newest);
    return this.createVersion(1, true);
  }

  /** Writes a new random version `first` (or the next free one); on first use, a racing v1 is taken. */
  private async createVersion(first: number, takeExisting: boolean): Promise<KekRef> {
    for (let v = first; ; v++) {
      const key = randomBytes(KEK_BYTES);
      try {
        await writeKeyFileExclusive(this.dir, `${PREFIX}${v}`, key);
        return await this.ref(v);
      } catch (err) {
        const code = (err as { code?: unknown } | null)?.code;
        // Someone else created this version concurrently: for first use, take it; for rotation, go on.
        if (code === 'EEXIST' && takeExisting) return await this.ref(v);
        if (code !== 'EEXIST') throw fromSystemError(err, this.dir, 'key store');
      } finally {
        key.fill(0);
      }
    }
  }

  /** Makes a new KEK version (newest + 1) and returns it. Old versions stay (see deleteVersion). */
  async rotatePlatform(): Promise<KekRef> {
    const vs = await this.versions();
    const next = (vs[vs.length - 1] ?? 0) + 1;
    return this.createVersion(next, false);
  }

  /**
   * Deletes version `version` for good (never the newest; callers check that no volume needs it, see
   * platform-delete.ts). Crash-safe: the file is renamed to a tombstone (directory fsynced: from then
   * on the version is gone), its bytes overwritten with zeros and synced, then unlinked. A crash leaves
   * the version intact or a tombstone, which the next deletion removes.
   */
  async deleteVersion(version: number, opts: { killPoint?: KillPoint } = {}): Promise<void> {
    const vs = await this.versions();
    if (!vs.includes(version)) {
      throw new AtrestError('FILE_NOT_FOUND', `no platform KEK version ${version} in key store ${this.dir}`, {
        path: this.path(version),
        hint: `versions present: ${vs.join(', ') || 'none'}`,
      });
    }
    if (version === vs[vs.length - 1]) {
      throw new AtrestError(
        'USAGE',
        `version ${version} is the newest platform KEK version and is never deleted`,
        {
          path: this.path(version),
          hint: 'rotate first (atrest key rotate-platform), re-wrap its volumes, then delete it',
        },
      );
    }
    const tomb = join(this.dir, `.${PREFIX}${version}.deleted-${randomBytes(6).toString('hex')}`);
    try {
      await rename(this.path(version), tomb);
      await fsyncDir(this.dir);
      await opts.killPoint?.('tombstoned');
    } catch (err) {
      throw fromSystemError(err, this.path(version), 'platform KEK');
    }
    await this.removeLeftovers();
  }

  /**
   * Removes leftovers of crashed deletions and writes, zeroing their bytes first: deletion tombstones,
   * and temp files of versions no longer present that are older than STALE_TEMP_MS (a crash between
   * link and unlink in writeKeyFileExclusive leaves a hard link of the key). Returns the names removed.
   */
  async removeLeftovers(): Promise<string[]> {
    const present = await this.versions();
    const removed: string[] = [];
    for (const n of await readdir(this.dir)) {
      const m = /^\.platform-kek\.v([0-9]+)\.(deleted|tmp)-[0-9a-f]+$/.exec(n);
      if (m === null) continue;
      const p = join(this.dir, n);
      try {
        if (m[2] === 'tmp') {
          if (present.includes(Number(m[1]))) continue;
          const st = await lstat(p);
          if (Date.now() - st.mtimeMs < STALE_TEMP_MS) continue;
        }
        await zeroFile(p);
        await unlink(p);
        removed.push(n);
      } catch (err) {
        if ((err as { code?: unknown } | null)?.code === 'ENOENT') continue;
        throw fromSystemError(err, p, 'platform KEK');
      }
    }
    if (removed.length > 0) await fsyncDir(this.dir);
    return removed;
  }

  protected async load(ref: KekRef): Promise<Buffer> {
    if (!ref.keyId.startsWith(KEY_ID_PREFIX) || !Number.isInteger(ref.version) || ref.version < 1) {
      throw new AtrestError('USAGE', `bad platform KEK reference ${ref.keyId} v${ref.version}`);
    }
    const mine = await this.keyId();
    if (ref.keyId !== mine) {
      throw new AtrestError(
        'KEY_UNAVAILABLE',
        `key revoked or unavailable: the volume is bound to the platform key of another key store ` +
          `(${ref.keyId}; this store ${this.dir} is ${mine})`,
        {
          hint: 'open it on the host that formatted it (or with --key-store), or with a recovery key and then `atrest key use IMAGE --kek platform:`',
        },
      );
    }
    return readKekFile(this.path(ref.version), `platform: v${ref.version}`, true);
  }
}

/** Overwrites a small regular file (not a symlink) with zeros and syncs it. */
async function zeroFile(path: string): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) return;
    await fh.write(Buffer.alloc(Math.min(st.size, 4096)), 0, Math.min(st.size, 4096), 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Makes a new platform KEK version in the store. */
export async function rotatePlatform(opts: PlatformStoreOptions = {}): Promise<KekRef> {
  return new PlatformKekProvider(opts).rotatePlatform();
}
