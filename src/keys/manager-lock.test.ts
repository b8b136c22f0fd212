import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  formatLuks2,
  metadataLockDir,
  readLuks2,
  setMetadataLockDir,
  unlockVolumeKey,
} from '../luks2/index.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { KeyManager } from './manager.js';

const tmp = useTempDir('atrest-km-lock-');
let dir: string;
beforeAll(() => {
  dir = tmp();
  setMetadataLockDir(join(dir, 'locks'));
});
afterAll(() => {
  setMetadataLockDir(null);
});

describe('header read-modify-write under the lock', () => {
  it('concurrent add-recovery from stale reads of the header: every key slot lands and every key opens', async () => {
    const image = join(dir, 'v.img');
    const pass = Buffer.from('passphrase for the lock test');
    await formatLuks2({ imagePath: image, dataSize: 1 << 20, passphrase: pass, pbkdf2Iterations: 1000 });
    const km = new KeyManager({ keyStoreDir: join(dir, 'store') });
    try {
      // each caller read the header before the others wrote it (like concurrent CLI runs)
      const metas = await Promise.all([1, 2, 3, 4].map(() => readLuks2(image)));
      const results = await Promise.all(
        metas.map((m) =>
          km.addRecovery(m, { passphrase: pass }, { type: 'pbkdf2', hash: 'sha256', iterations: 1000 }),
        ),
      );
      expect(new Set(results.map((r) => r.keyslot)).size).toBe(4);
      const meta = await readLuks2(image);
      expect(meta.keyslots.map((k) => k.id).sort()).toEqual([0, 1, 2, 3, 4]);
      expect(meta.tokens.filter((t) => t.type === 'atrest-recovery')).toHaveLength(4);
      for (const r of results) {
        const u = await unlockVolumeKey(meta, r.passphrase, { keyslot: r.keyslot });
        u.volumeKey.fill(0);
        r.passphrase.fill(0);
      }
      // the callers' views are the header as written, and no lock is left behind
      expect(metas.every((m) => m.keyslots.length >= 2)).toBe(true);
      expect((await readdir(metadataLockDir())).filter((f) => f.endsWith('.meta.lock'))).toEqual([]);
    } finally {
      km.close();
    }
  });
});
