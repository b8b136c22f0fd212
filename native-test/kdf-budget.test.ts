// Crafted KDF parameters: unlocks with huge PBKDF2 iterations fail with the KDF budget error while the daemon keeps serving another volume (run as root).
import { open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KDF_MAX_ITERATIONS } from '../src/crypto/kdf-limits.js';
import { readLuks2, setMetadataLockDir, writeMetadata, type JsonObject } from '../src/luks2/index.js';
import { makeAtrestEnv, type AtrestEnv } from './helpers/cli.js';

const BUDGET_S = 4;
let t: AtrestEnv;
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-kdfbudget-');
  t.env.ATREST_KDF_MAX_SECONDS = String(BUDGET_S);
  // a libuv pool as large as the number of crafted unlocks below (bin/atrest.js defaults to 16): the
  // same as 16 crafted unlocks against the default, at a quarter of the cost
  t.env.UV_THREADPOOL_SIZE = '4';
  setMetadataLockDir(join(t.dir, 'state', 'locks'));
});
afterEach(async () => {
  setMetadataLockDir(null);
  await t.cleanup();
});

/** Resolves with the ms `op` took, or rejects when it takes longer than `limitMs`. */
async function timed(what: string, op: () => Promise<unknown>, limitMs: number): Promise<number> {
  const start = Date.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    op(),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took over ${limitMs} ms`)), limitMs);
    }),
  ]).finally(() => clearTimeout(timer));
  return Date.now() - start;
}

describe('KDF budget', () => {
  it('huge PBKDF2 iterations: unlocks fail with KDF_BUDGET and another volume keeps serving I/O', async () => {
    const key = join(t.dir, 'key');
    await writeFile(key, 'a passphrase for the kdf budget test', { mode: 0o600 });
    const fast = ['--key-file', key, '--pbkdf-force-iterations', '1000'];
    const good = join(t.dir, 'good.img');
    let r = await t.atrest(['format', good, '--size', '16M', ...fast]);
    expect(r.code, r.stderr).toBe(0);
    const bad: string[] = [];
    for (let i = 0; i < 4; i++) {
      const img = join(t.dir, `bad${i}.img`);
      r = await t.atrest(['format', img, '--size', '8M', ...fast]);
      expect(r.code, r.stderr).toBe(0);
      // crafted: the keyslot's PBKDF2 iterations at the largest value cryptsetup accepts (minutes of work)
      const meta = await readLuks2(img);
      const json = structuredClone(meta.json);
      const kdf = ((json.keyslots as Record<string, JsonObject>)['0'] as JsonObject).kdf as JsonObject;
      kdf.iterations = KDF_MAX_ITERATIONS;
      await writeMetadata(meta, json);
      bad.push(img);
    }
    r = await t.atrest(['open', good, 'good', '--key-file', key]);
    expect(r.code, r.stderr).toBe(0);
    const disk = join(t.runDir, 'good');

    // as many crafted unlocks as the libuv pool has threads, at once
    const opens = bad.map((img, i) =>
      t.atrest(['open', img, `bad${i}`, '--key-file', key], { timeoutMs: 300_000 }),
    );
    let finished = false;
    const all = Promise.all(opens).finally(() => (finished = true));
    const buf = Buffer.alloc(4096);
    let ops = 0;
    const deadline = Date.now() + 2 * BUDGET_S * 1000;
    while (!finished || Date.now() < deadline) {
      if (finished && ops > 20) break;
      await timed('stat of the served disk file', () => stat(disk), 10_000);
      // a write made durable: the daemon has to encrypt it and write the image through its file I/O
      await timed(
        'a durable 4 KiB write to the served disk file',
        async () => {
          const fh = await open(disk, 'r+');
          try {
            buf.fill(ops & 0xff);
            await fh.write(buf, 0, buf.length, (ops % 1024) * 4096);
            await fh.datasync();
          } finally {
            await fh.close();
          }
        },
        10_000,
      );
      ops++;
      await new Promise((res) => setTimeout(res, 50));
    }
    const results = await all;
    expect(ops).toBeGreaterThan(10);
    for (const res of results) {
      expect(res.code, res.stdout + res.stderr).not.toBe(0);
      expect(res.stderr).toMatch(/KDF time budget of 4 s/);
      expect(res.stderr).toMatch(/key slot 0/);
    }
    // the daemon still serves and opens
    r = await t.atrest(['status', 'good']);
    expect(r.code, r.stderr).toBe(0);
    expect((await t.atrest(['close', 'good'])).code).toBe(0);
  }, 600_000);
});
