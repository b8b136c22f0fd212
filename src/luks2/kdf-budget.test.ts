import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KDF_MAX_ITERATIONS, setKdfBudget } from '../crypto/kdf-limits.js';
import { closeKdfPool } from '../crypto/kdf-pool.js';
import { formatLuks2 } from './format.js';
import { addKeyslot } from './keyslots.js';
import type { JsonObject } from './metadata.js';
import { setMetadataLockDir } from './metadata-lock.js';
import { keyslotUnusableReason, unlockVolumeKey } from './unlock.js';
import { readLuks2, writeMetadata } from './volume.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const A = Buffer.from('passphrase of the crafted key slot');
const B = Buffer.from('passphrase of the ordinary key slot');
const dir = useTempDir('atrest-kdfb-');
beforeAll(() => {
  setMetadataLockDir(join(dir(), 'locks'));
});
afterAll(async () => {
  setKdfBudget(null);
  setMetadataLockDir(null);
  await closeKdfPool();
});

async function setIterations(path: string, slot: number, iterations: number): Promise<void> {
  const meta = await readLuks2(path);
  const json = structuredClone(meta.json);
  (((json.keyslots as Record<string, JsonObject>)[String(slot)] as JsonObject).kdf as JsonObject).iterations =
    iterations;
  await writeMetadata(meta, json);
}

describe('key slots with costly KDF parameters', () => {
  it('skips a key slot over the time budget, opens with another, reports the budget when none matches', async () => {
    const path = join(dir(), 'v.img');
    await formatLuks2({ imagePath: path, dataSize: 1 << 20, passphrase: A, pbkdf2Iterations: 1000 });
    const meta = await readLuks2(path);
    const u = await unlockVolumeKey(meta, A);
    await addKeyslot(meta, u.volumeKey, B, { kdf: { type: 'pbkdf2', iterations: 1000 } });
    u.volumeKey.fill(0);
    await setIterations(path, 0, KDF_MAX_ITERATIONS);
    setKdfBudget({ maxMemoryKiB: 1024 * 1024, maxSeconds: 1 });
    const crafted = await readLuks2(path);
    expect(keyslotUnusableReason(crafted, 0)).toBeNull();
    // slot 0 is tried first, stopped after 1 s; slot 1 opens
    const ok = await unlockVolumeKey(crafted, B);
    expect(ok.keyslot).toBe(1);
    ok.volumeKey.fill(0);
    const err = await unlockVolumeKey(crafted, A).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KDF_BUDGET', path });
    expect((err as Error).message).toMatch(
      /key slot 0: PBKDF2-sha256 with 2147483647 iterations .*time budget of 1 s/,
    );
    // beyond cryptsetup's limit: the key slot is unusable, nothing runs
    await setIterations(path, 0, 2 ** 31);
    const beyond = await readLuks2(path);
    expect(keyslotUnusableReason(beyond, 0)).toMatch(
      /PBKDF2 iterations 2147483648 is outside cryptsetup's limits/,
    );
    await expect(unlockVolumeKey(beyond, A, { keyslot: 0 })).rejects.toMatchObject({ code: 'UNSUPPORTED' });
  }, 60_000);
});
