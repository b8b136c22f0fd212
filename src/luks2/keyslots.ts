// Adding and removing keyslots: area allocation like cryptsetup (first gap, 4 KiB aligned), KDF choice, digest links.
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { benchmarkPbkdf2Iterations, PBKDF2_MIN_ITERATIONS } from '../crypto/kdf.js';
import { kdfLimitViolation } from '../crypto/kdf-limits.js';
import { digestHandler } from './digest-pbkdf2.js';
import { AtrestError } from '../errors/index.js';
import { openFile } from './disk.js';
import { KDF_SALT_LEN } from './kdf-table.js';
import { afMaterialSize, AF_STRIPES, keyslotHandler } from './keyslot-luks2.js';
import { AREA_ALIGN, KEYSLOTS_MAX, TOKENS_MAX, type JsonObject } from './metadata.js';
import { areaIo, verifyVolumeKey } from './unlock.js';
import { writeMetadata, type Luks2Metadata } from './volume.js';

/** The KDF of a new keyslot. Default: PBKDF2-SHA256 benchmarked to iterTimeMs (1000 ms). */
export type KdfChoice =
  | { type: 'pbkdf2'; hash?: 'sha256' | 'sha512' | 'sha1'; iterations?: number; iterTimeMs?: number }
  | { type: 'argon2i' | 'argon2id'; time: number; memoryKiB: number; cpus: number };

export interface AddKeyslotOptions {
  /** Keyslot id to use (default: the lowest free one). */
  keyslot?: number;
  kdf?: KdfChoice;
  /** 0 ignore, 1 normal (default), 2 prefer. */
  priority?: 0 | 1 | 2;
  /**
   * A token to write in the same metadata update, linked to the new keyslot (its `keyslots` field is
   * set here). Keyslot and token then appear together or not at all.
   */
  token?: JsonObject;
}

/** The lowest free token id of `json`, or null when all TOKENS_MAX are taken. */
export function freeTokenId(json: JsonObject): number | null {
  const tokens = json.tokens as JsonObject;
  for (let id = 0; id < TOKENS_MAX; id++) if (!(String(id) in tokens)) return id;
  return null;
}

function refuseWhileConverting(meta: Luks2Metadata): void {
  if (!meta.converting) return;
  throw new AtrestError(
    'REENCRYPT_IN_PROGRESS',
    `${meta.headerPath}: an in-place conversion is under way; key slots cannot change until it ends`,
    { path: meta.headerPath, hint: 'let it finish (atrest encrypt IMAGE resumes it), then try again' },
  );
}

/** Rounds up to a multiple of `a`. */
export function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Area size a keyslot for a key of `keySize` bytes takes (4000 stripes, 4 KiB aligned): 258048 for 64. */
export function keyslotAreaSize(keySize: number): number {
  return roundUp(afMaterialSize(keySize), AREA_ALIGN);
}

/** The first gap in the keyslots area that fits `size` bytes, or null. */
function findAreaGap(
  areas: Array<{ offset: number; size: number }>,
  start: number,
  end: number,
  size: number,
): number | null {
  let at = start;
  for (const a of [...areas].sort((x, y) => x.offset - y.offset)) {
    if (a.offset >= at + size) break;
    at = Math.max(at, roundUp(a.offset + a.size, AREA_ALIGN));
  }
  return at + size <= end ? at : null;
}

/**
 * The first gap of `size` bytes in `meta`'s keyslots area (after both binary headers), or null;
 * `taken` defaults to the areas of the keyslots the header has.
 */
export function freeKeyslotArea(
  meta: Luks2Metadata,
  size: number,
  taken: Array<{ offset: number; size: number }> = meta.keyslots.map((k) => k.area),
): number | null {
  const start = 2 * meta.hdrSize;
  return findAreaGap(taken, start, start + meta.keyslotsSize, size);
}

/**
 * `choice` with its PBKDF2 iterations benchmarked now (when it gives a target time instead), so a
 * header change can run the benchmark before it takes the metadata lock.
 */
export async function resolveKdf(choice: KdfChoice | undefined, keySize: number): Promise<KdfChoice> {
  const c = choice ?? { type: 'pbkdf2' };
  if (c.type !== 'pbkdf2' || c.iterations !== undefined) return c;
  const hash = c.hash ?? 'sha256';
  return {
    type: 'pbkdf2',
    hash,
    iterations: await benchmarkPbkdf2Iterations(hash, keySize, c.iterTimeMs ?? 1000),
  };
}

export async function kdfJson(choice: KdfChoice | undefined, keySize: number): Promise<JsonObject> {
  const salt = randomBytes(KDF_SALT_LEN).toString('base64');
  const c = choice ?? { type: 'pbkdf2' };
  if (c.type === 'pbkdf2') {
    const hash = c.hash ?? 'sha256';
    const iterations = c.iterations ?? (await benchmarkPbkdf2Iterations(hash, keySize, c.iterTimeMs ?? 1000));
    const beyond = Number.isSafeInteger(iterations)
      ? kdfLimitViolation({ type: 'pbkdf2', iterations })
      : `PBKDF2 iterations ${iterations} are not an integer`;
    if (beyond !== null) throw new AtrestError('USAGE', beyond);
    return { type: 'pbkdf2', hash, iterations, salt };
  }
  const ok = (n: number, min: number): boolean => Number.isSafeInteger(n) && n >= min;
  const beyond =
    ok(c.time, 1) && ok(c.cpus, 1) && ok(c.memoryKiB, 8 * c.cpus)
      ? kdfLimitViolation({ type: c.type, time: c.time, memory: c.memoryKiB, cpus: c.cpus })
      : `${c.type} parameters out of range (time >= 1, cpus >= 1, memory >= 8 KiB per cpu)`;
  if (beyond !== null) throw new AtrestError('USAGE', beyond);
  return { type: c.type, time: c.time, memory: c.memoryKiB, cpus: c.cpus, salt };
}

/** A new 'luks2' keyslot object for a 512-bit AES-XTS key (without the area offset filled in yet). */
export function keyslotJson(keySize: number, offset: number, kdf: JsonObject, priority?: number): JsonObject {
  const ks: JsonObject = {
    type: 'luks2',
    key_size: keySize,
    af: { type: 'luks1', stripes: AF_STRIPES, hash: 'sha256' },
    area: {
      type: 'raw',
      offset: String(offset),
      size: String(keyslotAreaSize(keySize)),
      encryption: 'aes-xts-plain64',
      key_size: 64,
    },
    kdf,
  };
  if (priority !== undefined && priority !== 1) ks.priority = priority;
  return ks;
}

/** Digest iterations cryptsetup-style: 1/8 of the keyslot's time (125 ms of 1 s), at least 1000. */
export function digestIterationsFor(kdf: KdfChoice | undefined, keyslotIterations: number): number {
  if (kdf?.type === 'pbkdf2' && kdf.iterations !== undefined) return PBKDF2_MIN_ITERATIONS;
  const ms = kdf?.type === 'pbkdf2' ? (kdf.iterTimeMs ?? 1000) : 1000;
  return Math.max(PBKDF2_MIN_ITERATIONS, Math.floor((keyslotIterations * 125) / ms));
}

/**
 * Adds a keyslot holding `volumeKey` (which must match the volume's digest) under `passphrase`.
 * Writes the keyslot area, then both header copies. Returns the keyslot id.
 */
export async function addKeyslot(
  meta: Luks2Metadata,
  volumeKey: Buffer,
  passphrase: Uint8Array,
  opts: AddKeyslotOptions = {},
): Promise<number> {
  const path = meta.headerPath;
  refuseWhileConverting(meta);
  if (!(await verifyVolumeKey(meta, volumeKey))) {
    throw new AtrestError('WRONG_KEY', `${path}: the volume key given does not match this volume`, {
      path,
      hint: 'unlock the volume first and pass its key',
    });
  }
  const used = new Set(meta.keyslots.map((k) => k.id));
  let id = opts.keyslot;
  if (id === undefined) {
    id = 0;
    while (used.has(id)) id++;
  }
  if (!Number.isSafeInteger(id) || id < 0 || id >= KEYSLOTS_MAX) {
    throw new AtrestError('USAGE', `${path}: no free key slot (at most ${KEYSLOTS_MAX})`, { path });
  }
  if (used.has(id)) {
    throw new AtrestError('USAGE', `${path}: key slot ${id} is in use`, {
      path,
      hint: 'remove it first or pick another',
    });
  }
  const keySize = volumeKey.length;
  const offset = freeKeyslotArea(meta, keyslotAreaSize(keySize));
  if (offset === null) {
    throw new AtrestError('NO_SPACE', `${path}: no space left in the keyslots area for a new key slot`, {
      path,
      hint: 'remove an unused key slot first',
    });
  }
  const ks = keyslotJson(keySize, offset, await kdfJson(opts.kdf, keySize), opts.priority);
  const json = structuredClone(meta.json);
  (json.keyslots as JsonObject)[String(id)] = ks;
  const digests = json.digests as Record<string, JsonObject>;
  const digest = digests[String(meta.digest.id)] as JsonObject;
  (digest.keyslots as string[]).push(String(id));
  (digest.keyslots as string[]).sort((a, b) => Number(a) - Number(b));
  if (opts.token !== undefined) {
    const tokenId = freeTokenId(json);
    if (tokenId === null) {
      throw new AtrestError('NO_SPACE', `${path}: no free token (at most ${TOKENS_MAX})`, {
        path,
        hint: 'remove an unused token first',
      });
    }
    (json.tokens as JsonObject)[String(tokenId)] = { ...structuredClone(opts.token), keyslots: [String(id)] };
  }
  const handler = keyslotHandler('luks2');
  if (!handler) throw new AtrestError('INTERNAL', 'no luks2 keyslot handler');
  const fh = await openFile(path, 'r+', 'LUKS2 header');
  try {
    await handler.setKey(ks, passphrase, volumeKey, areaIo(fh, path));
  } finally {
    await fh.close();
  }
  await writeMetadata(meta, json);
  return id;
}

/**
 * Removes keyslot `keyslot`: overwrites its area with random bytes, then drops it from the metadata
 * (and from digests and tokens; a token of a type in `opts.dropTokenTypes` that is left with no
 * keyslot goes too). Refuses to remove the last keyslot unless `opts.allowLast`.
 */
export async function removeKeyslot(
  meta: Luks2Metadata,
  keyslot: number,
  opts: { allowLast?: boolean; dropTokenTypes?: readonly string[] } = {},
): Promise<void> {
  const path = meta.headerPath;
  refuseWhileConverting(meta);
  const info = meta.keyslots.find((k) => k.id === keyslot);
  if (!info) throw new AtrestError('USAGE', `${path}: there is no key slot ${keyslot}`, { path });
  if (meta.keyslots.length === 1 && !opts.allowLast) {
    throw new AtrestError(
      'USAGE',
      `${path}: key slot ${keyslot} is the last one; removing it loses the data`,
      {
        path,
        hint: 'add another key slot first',
      },
    );
  }
  const fh = await openFile(path, 'r+', 'LUKS2 header');
  try {
    const noise = randomBytes(info.area.size);
    await areaIo(fh, path).write(info.area.offset, noise);
  } finally {
    await fh.close();
  }
  const json = structuredClone(meta.json);
  delete (json.keyslots as JsonObject)[String(keyslot)];
  for (const group of ['digests', 'tokens'] as const) {
    for (const obj of Object.values(json[group] as Record<string, JsonObject>)) {
      if (Array.isArray(obj.keyslots)) obj.keyslots = obj.keyslots.filter((k) => k !== String(keyslot));
    }
  }
  const tokens = json.tokens as Record<string, JsonObject>;
  for (const [id, t] of Object.entries(tokens)) {
    const orphan = Array.isArray(t.keyslots) && t.keyslots.length === 0;
    if (orphan && typeof t.type === 'string' && opts.dropTokenTypes?.includes(t.type)) delete tokens[id];
  }
  await writeMetadata(meta, json);
}

/**
 * Replaces token `id` with `token` (keeping its keyslot links when `token.keyslots` is absent), or
 * deletes it when `token` is null. One metadata update; the keyslots themselves are untouched.
 */
export async function setToken(meta: Luks2Metadata, id: number, token: JsonObject | null): Promise<void> {
  const path = meta.headerPath;
  const json = structuredClone(meta.json);
  const tokens = json.tokens as Record<string, JsonObject>;
  const old = tokens[String(id)];
  if (old === undefined) throw new AtrestError('USAGE', `${path}: there is no token ${id}`, { path });
  if (token === null) delete tokens[String(id)];
  else tokens[String(id)] = { ...structuredClone(token), keyslots: token.keyslots ?? old.keyslots ?? [] };
  await writeMetadata(meta, json);
}

/** One keyslot of the new volume key in replaceVolumeKey. */
export interface NewKeyslot {
  passphrase: Uint8Array;
  kdf: KdfChoice;
  /** A token linked to it (its `keyslots` is set here). */
  token?: JsonObject;
}

/**
 * Puts a new volume key in place of the old one, in one metadata update: the keyslots of the old key
 * and the tokens linked only to them go, a new digest and the given keyslots (written first into free
 * keyslot-area space that also avoids `reserved`) come. `mutateJson` adds the last changes (the
 * conversion mark and plan). Returns the areas of the old keyslots: the caller wipes them once the
 * data no longer needs the old key. The segment's iv_tweak becomes 0 (data is rewritten under the new
 * key from tweak 0).
 */
export async function replaceVolumeKey(
  meta: Luks2Metadata,
  newKey: Buffer,
  slots: readonly NewKeyslot[],
  opts: { reserved?: Array<{ offset: number; size: number }>; mutateJson?: (json: JsonObject) => void } = {},
): Promise<Array<{ offset: number; size: number }>> {
  const path = meta.headerPath;
  refuseWhileConverting(meta);
  if (slots.length === 0) throw new AtrestError('USAGE', `${path}: the new key needs at least one key slot`);
  if (slots.length > KEYSLOTS_MAX) throw new AtrestError('USAGE', `${path}: too many key slots`);
  const oldIds = new Set(meta.digest.keyslots);
  const oldAreas = meta.keyslots.filter((k) => oldIds.has(k.id)).map((k) => ({ ...k.area }));
  const taken = [...meta.keyslots.map((k) => k.area), ...(opts.reserved ?? [])];
  const json = structuredClone(meta.json);
  const keyslotsJson = json.keyslots as Record<string, JsonObject>;
  const tokens = json.tokens as Record<string, JsonObject>;
  const digests = json.digests as Record<string, JsonObject>;
  // drop the old key's keyslots, their tokens, and its digest
  for (const id of oldIds) delete keyslotsJson[String(id)];
  for (const [tid, t] of Object.entries(tokens)) {
    if (!Array.isArray(t.keyslots)) continue;
    const rest = t.keyslots.filter((k) => !oldIds.has(Number(k)));
    if (rest.length === 0 && t.keyslots.length > 0) delete tokens[tid];
    else t.keyslots = rest;
  }
  delete digests[String(meta.digest.id)];
  const dh = digestHandler('pbkdf2');
  const kh = keyslotHandler('luks2');
  if (!dh || !kh) throw new AtrestError('INTERNAL', 'LUKS2 handlers missing');
  const digest = await dh.create(newKey, PBKDF2_MIN_ITERATIONS, 'sha256');
  const digestId = meta.digest.id;
  digest.segments = [String(meta.segment.id)];
  digest.keyslots = [];
  const fh = await openFile(path, 'r+', 'LUKS2 header');
  try {
    let nextId = 0;
    for (const s of slots) {
      while (String(nextId) in keyslotsJson || oldIds.has(nextId)) nextId++;
      if (nextId >= KEYSLOTS_MAX)
        throw new AtrestError('NO_SPACE', `${path}: no free key slot for the new key`, { path });
      const size = keyslotAreaSize(newKey.length);
      const offset = freeKeyslotArea(meta, size, taken);
      if (offset === null) {
        throw new AtrestError(
          'NO_SPACE',
          `${path}: no space left in the keyslots area for the new key's slots`,
          {
            path,
            hint: 'remove unused key slots first',
          },
        );
      }
      taken.push({ offset, size });
      const ks = keyslotJson(newKey.length, offset, await kdfJson(s.kdf, newKey.length));
      await kh.setKey(ks, s.passphrase, newKey, areaIo(fh, path));
      keyslotsJson[String(nextId)] = ks;
      (digest.keyslots as string[]).push(String(nextId));
      if (s.token !== undefined) {
        const tid = freeTokenId(json);
        if (tid === null) throw new AtrestError('NO_SPACE', `${path}: no free token`, { path });
        tokens[String(tid)] = { ...structuredClone(s.token), keyslots: [String(nextId)] };
      }
      nextId++;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  digests[String(digestId)] = digest;
  const segment = (json.segments as Record<string, JsonObject>)[String(meta.segment.id)];
  if (segment) segment.iv_tweak = '0';
  opts.mutateJson?.(json);
  await writeMetadata(meta, json);
  return oldAreas;
}

/** Overwrites keyslot areas with random bytes (old keys that must be gone). */
export async function wipeAreas(
  headerPath: string,
  areas: ReadonlyArray<{ offset: number; size: number }>,
): Promise<void> {
  const fh = await openFile(headerPath, 'r+', 'LUKS2 header');
  try {
    const io = areaIo(fh, headerPath);
    for (const a of areas) await io.write(a.offset, randomBytes(a.size));
    await fh.sync();
  } finally {
    await fh.close();
  }
}
