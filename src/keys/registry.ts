// Volumes atrest knows use the platform key: one small file per volume UUID in the key store, so that
// old platform KEK versions are removed only when none of them needs it any more.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fromSystemError } from '../errors/index.js';

const SUBDIR = 'volumes';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface KnownVolume {
  uuid: string;
  /** File holding the LUKS2 header (the image unless detached; a sidecar during a conversion). */
  header: string;
  /** The image (where the header ends up after an in-place conversion). */
  image: string;
  forget(): Promise<void>;
}

/** Records (or updates) that the volume `uuid` (header and image files) uses the platform key. */
export async function recordKnownVolume(
  storeDir: string,
  uuid: string,
  header: string,
  image: string = header,
): Promise<void> {
  if (!UUID_RE.test(uuid)) return;
  const dir = join(storeDir, SUBDIR);
  const path = join(dir, uuid.toLowerCase());
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(tmp, `${header}\n${image}\n`, { mode: 0o600 });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw fromSystemError(err, path, 'key store volume record');
  }
}

/** Every volume recorded in the store. */
export async function knownVolumes(storeDir: string): Promise<KnownVolume[]> {
  const dir = join(storeDir, SUBDIR);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as { code?: unknown } | null)?.code === 'ENOENT') return [];
    throw fromSystemError(err, dir, 'key store');
  }
  const out: KnownVolume[] = [];
  for (const n of names) {
    if (!UUID_RE.test(n)) continue;
    const path = join(dir, n);
    const [header = '', image = ''] = (await readFile(path, 'utf8').catch(() => '')).split('\n');
    if (header === '') continue;
    out.push({ uuid: n, header, image: image || header, forget: () => unlink(path).catch(() => undefined) });
  }
  return out;
}
