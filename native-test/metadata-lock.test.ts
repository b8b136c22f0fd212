// Concurrent header changes: parallel `key add-recovery` runs all succeed and every printed recovery key opens (run as root).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeAtrestEnv, run, type AtrestEnv } from './helpers/cli.js';

let t: AtrestEnv;
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-metalock-');
});
afterEach(async () => {
  await t.cleanup();
});

describe('metadata lock', () => {
  it('concurrent key add-recovery runs never lose a key slot: every printed recovery key opens', async () => {
    const img = join(t.dir, 'v.img');
    const f = await t.atrest(['format', img, '--size', '16M']);
    expect(f.code, f.stderr).toBe(0);
    const ROUNDS = 3;
    const AT_ONCE = 3;
    const keys: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const runs = await Promise.all(
        Array.from({ length: AT_ONCE }, () =>
          t.atrest(['key', 'add-recovery', img, '--iter-time', '50'], { timeoutMs: 180_000 }),
        ),
      );
      for (const r of runs) {
        // each waits for the others' header change, then makes its own on the header as it is then
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout.trim()).toMatch(/^([0-9a-z]{5}-){7}[0-9a-z]{5}$/);
        keys.push(r.stdout.trim());
      }
    }
    expect(keys.length).toBe(ROUNDS * AT_ONCE);
    const list = await t.atrest(['key', 'list', img, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const slots = (JSON.parse(list.stdout) as { keyslots: Array<{ kind: string }> }).keyslots;
    expect(slots.filter((s) => s.kind === 'recovery').length).toBe(keys.length);
    for (const [i, key] of keys.entries()) {
      const kf = join(t.dir, `rec-${i}`);
      await writeFile(kf, key, { mode: 0o600 });
      const r = await run('cryptsetup', ['open', '--test-passphrase', '--key-file', kf, img]);
      expect(r.code, `recovery key ${i} does not open the volume: ${r.stderr}`).toBe(0);
    }
  }, 900_000);
});
