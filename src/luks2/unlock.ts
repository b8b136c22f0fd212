// unlockVolumeKey: tries keyslots (priority high → normal) through their handlers and checks each candidate key with the segment digest.
import { Buffer } from 'node:buffer';
import type { FileHandle } from 'node:fs/promises';
import { AtrestError, isAtrestError } from '../errors/index.js';
import { digestHandler } from './digest-pbkdf2.js';
import { openFile, readAt, writeAt } from './disk.js';
import { keyslotHandler, type AreaIo } from './keyslot-luks2.js';
import { InvalidMetadata, type JsonObject } from './metadata.js';
import type { Luks2Metadata } from './volume.js';

export function rawKeyslot(meta: Luks2Metadata, id: number): JsonObject {
  return (meta.json.keyslots as Record<string, JsonObject>)[String(id)] as JsonObject;
}

export function rawDigest(meta: Luks2Metadata): JsonObject {
  return (meta.json.digests as Record<string, JsonObject>)[String(meta.digest.id)] as JsonObject;
}

export function areaIo(fh: FileHandle, path: string): AreaIo {
  return {
    async read(offset, length) {
      const buf = await readAt(fh, offset, length);
      if (buf.length !== length) {
        throw new AtrestError('TRUNCATED_IMAGE', `${path} ends inside a keyslot area`, {
          path,
          hint: 'restore the header from a backup',
        });
      }
      return buf;
    },
    async write(offset, data) {
      await writeAt(fh, offset, data);
      await fh.sync();
    },
  };
}

/** Whether keyslot `id` can be used here; null if yes, else why not. */
export function keyslotUnusableReason(meta: Luks2Metadata, id: number): string | null {
  const info = meta.keyslots.find((k) => k.id === id);
  if (!info) return `there is no key slot ${id}`;
  if (!meta.digest.keyslots.includes(id)) return `key slot ${id} does not hold the data segment's key`;
  const handler = keyslotHandler(info.type);
  if (!handler) return `key slot ${id} has type ${info.type}, which atrest does not support`;
  try {
    const reason = handler.check(rawKeyslot(meta, id));
    return reason === null ? null : `key slot ${id}: ${reason}`;
  } catch (err) {
    if (err instanceof InvalidMetadata) return `key slot ${id} is malformed: ${err.message}`;
    throw err;
  }
}

/** Checks `key` against the data segment's digest. */
export async function verifyVolumeKey(meta: Luks2Metadata, key: Uint8Array): Promise<boolean> {
  const handler = digestHandler(meta.digest.type);
  if (!handler) return false;
  return handler.verify(rawDigest(meta), key);
}

/**
 * Recovers the volume key with `passphrase` (the exact bytes of a key file). Tries `opts.keyslot` only,
 * or every usable keyslot, priority 2 before 1 (priority 0 only when named). The caller wipes the key.
 */
export async function unlockVolumeKey(
  meta: Luks2Metadata,
  passphrase: Uint8Array,
  opts: { keyslot?: number } = {},
): Promise<{ volumeKey: Buffer; keyslot: number }> {
  const path = meta.headerPath;
  let candidates: number[];
  if (opts.keyslot !== undefined) {
    const reason = keyslotUnusableReason(meta, opts.keyslot);
    if (reason !== null) {
      const code = meta.keyslots.some((k) => k.id === opts.keyslot) ? 'UNSUPPORTED' : 'USAGE';
      throw new AtrestError(code, `${path}: ${reason}`, { path, hint: 'choose another key slot' });
    }
    candidates = [opts.keyslot];
  } else {
    candidates = [...meta.keyslots]
      .filter((k) => k.priority > 0 && meta.digest.keyslots.includes(k.id))
      .sort((a, b) => b.priority - a.priority || a.id - b.id)
      .map((k) => k.id);
  }
  const reasons: string[] = [];
  const usable = candidates.filter((id) => {
    const reason = keyslotUnusableReason(meta, id);
    if (reason !== null) reasons.push(reason);
    return reason === null;
  });
  if (usable.length === 0) {
    if (reasons.length > 0) {
      throw new AtrestError('UNSUPPORTED', `${path}: no usable key slot (${reasons.join('; ')})`, {
        path,
        hint: 'add a PBKDF2 or Argon2 key slot with cryptsetup luksAddKey',
      });
    }
    throw new AtrestError('WRONG_KEY', `${path} has no key slots`, {
      path,
      hint: 'the volume cannot be unlocked without a key slot; restore the header from a backup',
    });
  }
  // a key slot whose KDF is over the budget is skipped (the others may still match), then reported
  let overBudget: AtrestError | null = null;
  const fh = await openFile(path, 'r', 'LUKS2 header');
  try {
    const io = areaIo(fh, path);
    for (const id of usable) {
      const info = meta.keyslots.find((k) => k.id === id);
      const handler = info ? keyslotHandler(info.type) : undefined;
      if (!handler) continue;
      let key: Buffer | null = null;
      try {
        key = await handler.getKey(rawKeyslot(meta, id), passphrase, io);
        if (await verifyVolumeKey(meta, key)) return { volumeKey: key, keyslot: id };
      } catch (err) {
        if (!(isAtrestError(err) && err.code === 'KDF_BUDGET')) throw err;
        overBudget ??= new AtrestError('KDF_BUDGET', `${path}: key slot ${id}: ${err.message}`, {
          path,
          ...(err.hint === undefined ? {} : { hint: err.hint }),
        });
      }
      key?.fill(0);
    }
  } finally {
    await fh.close();
  }
  if (overBudget !== null) throw overBudget;
  throw new AtrestError('WRONG_KEY', `${path}: no key slot matches this key file`, {
    path,
    hint: 'check the key file (cryptsetup uses its exact bytes, including any trailing newline)',
  });
}
