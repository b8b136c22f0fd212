// Volumes atrest knows use the platform key: one small file per volume UUID in the key store, so that
// `key delete-platform-version` can say which volumes may still need a KEK version. Written crash-safely.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fromSystemError } from '../errors/index.js';
import { mkdirDurable, replaceFileDurably, sweepStaleTemps, type KillPoint } from './durable-file.js';

const SUBDIR = 'volumes';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface KnownVolume {
  uuid: string;
  /** File holding the LUKS2 header (the image unless detached; a sidecar during a conversion); '' if damaged. */
  header: string;
  /** The image (where the header ends up after an in-place conversion). */
  image: string;
}

/** The directory of volume records in a key store. */
export function registryDir(storeDir: string): string {
  return join(storeDir, SUBDIR);
}

/**
 * Records (or updates) that the volume `uuid` (header and image files) uses the platform key. The
 * record is replaced atomically and durably (temp file, fsync, rename, directory fsync): a crash leaves
 * the old record or the new one. Records are never removed automatically.
 */
export async function recordKnownVolume(
  storeDir: string,
  uuid: string,
  header: string,
  image: string = header,
  opts: { killPoint?: KillPoint } = {},
): Promise<void> {
  if (!UUID_RE.test(uuid)) return;
  const dir = registryDir(storeDir);
  const path = join(dir, uuid.toLowerCase());
  try {
    await mkdirDurable(dir, 0o700);
    await sweepStaleTemps(dir);
    await replaceFileDurably(dir, uuid.toLowerCase(), Buffer.from(`${header}\n${image}\n`), opts);
  } catch (err) {
    throw fromSystemError(err, path, 'key store volume record');
  }
}

/** Every volume recorded in the store (temp files and other names are ignored). */
export async function knownVolumes(storeDir: string): Promise<KnownVolume[]> {
  const dir = registryDir(storeDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as { code?: unknown } | null)?.code === 'ENOENT') return [];
    throw fromSystemError(err, dir, 'key store');
  }
  const out: KnownVolume[] = [];
  for (const n of names.sort()) {
    if (!UUID_RE.test(n)) continue;
    const path = join(dir, n);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw fromSystemError(err, path, 'key store volume record');
    }
    // an empty header path: a record torn by an older writer; kept, so the volume counts as unseen
    const [header = '', image = ''] = text.split('\n');
    out.push({ uuid: n, header, image: image || header });
  }
  return out;
}
