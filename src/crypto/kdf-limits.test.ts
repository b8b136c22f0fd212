import { stat } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { argon2, pbkdf2 } from './kdf.js';
import {
  DEFAULT_KDF_BUDGET,
  kdfBudget,
  kdfLimitViolation,
  KDF_MAX_ITERATIONS,
  setKdfBudget,
} from './kdf-limits.js';
import { closeKdfPool } from './kdf-pool.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');

afterEach(async () => {
  setKdfBudget(null);
  await closeKdfPool();
});

describe('KDF limits (cryptsetup) and budget', () => {
  const tempDir = useTempDir('atrest-kdf-');

  it('refuses parameters beyond cryptsetup limits', async () => {
    expect(kdfLimitViolation({ type: 'pbkdf2', iterations: KDF_MAX_ITERATIONS })).toBeNull();
    expect(kdfLimitViolation({ type: 'pbkdf2', iterations: 2 ** 31 })).toMatch(
      /PBKDF2 iterations 2147483648/,
    );
    expect(kdfLimitViolation({ type: 'argon2id', time: 4, memory: 4 * 1024 * 1024 + 1, cpus: 4 })).toMatch(
      /memory/,
    );
    expect(kdfLimitViolation({ type: 'argon2i', time: 4, memory: 1024, cpus: 5 })).toMatch(/parallelism/);
    expect(kdfLimitViolation({ type: 'argon2i', time: 2 ** 32 - 1, memory: 1024, cpus: 1 })).toMatch(/time/);
    await expect(pbkdf2(b('p'), b('s'), 2 ** 31, 32, 'sha256')).rejects.toMatchObject({ code: 'USAGE' });
    await expect(
      argon2('argon2id', b('p'), b('saltsalt'), {
        timeCost: 1,
        memoryKiB: 64,
        parallelism: 8,
        keyLength: 32,
      }),
    ).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('reads the budget from the environment, with defaults and units', () => {
    expect(kdfBudget({})).toEqual(DEFAULT_KDF_BUDGET);
    expect(kdfBudget({ ATREST_KDF_MAX_MEMORY: '512M', ATREST_KDF_MAX_SECONDS: '5' })).toEqual({
      maxMemoryKiB: 512 * 1024,
      maxSeconds: 5,
    });
    expect(kdfBudget({ ATREST_KDF_MAX_MEMORY: '2G' }).maxMemoryKiB).toBe(2 * 1024 * 1024);
    expect(() => kdfBudget({ ATREST_KDF_MAX_SECONDS: 'soon' })).toThrow(/ATREST_KDF_MAX_SECONDS/);
  });

  it('Argon2 over the memory budget fails at once with KDF_BUDGET', async () => {
    setKdfBudget({ maxMemoryKiB: 1024, maxSeconds: 60 });
    await expect(
      argon2('argon2id', b('p'), b('saltsalt'), {
        timeCost: 1,
        memoryKiB: 2048,
        parallelism: 1,
        keyLength: 32,
      }),
    ).rejects.toThrow(/2048 KiB.*budget of 1024 KiB/);
    setKdfBudget({ maxMemoryKiB: 1024, maxSeconds: 60 });
    await expect(
      argon2('argon2id', b('p'), b('saltsalt'), {
        timeCost: 1,
        memoryKiB: 2048,
        parallelism: 1,
        keyLength: 32,
      }),
    ).rejects.toMatchObject({ code: 'KDF_BUDGET' });
  });

  it('huge PBKDF2 and Argon2 runs are stopped at the time budget, while file I/O goes on', async () => {
    setKdfBudget({ maxMemoryKiB: 1024 * 1024, maxSeconds: 2 });
    const dir = tempDir();
    const settled: string[] = [];
    const runs = [
      ...[1, 2, 3, 4, 5].map((i) =>
        pbkdf2(b(`p${i}`), b('salt'), KDF_MAX_ITERATIONS, 64, 'sha256').finally(() => settled.push('pbkdf2')),
      ),
      argon2('argon2id', b('p'), b('saltsalt'), {
        timeCost: KDF_MAX_ITERATIONS,
        memoryKiB: 64,
        parallelism: 1,
        keyLength: 32,
      }).finally(() => settled.push('argon2')),
    ].map((p) =>
      p.then(
        () => null,
        (e: unknown) => e,
      ),
    );
    // the libuv pool is free: many stats complete while every KDF is still running
    for (let i = 0; i < 50; i++) await stat(dir);
    expect(settled).toEqual([]);
    const errors = await Promise.all(runs);
    for (const e of errors) {
      expect(e).toMatchObject({ code: 'KDF_BUDGET' });
      expect((e as Error).message).toMatch(/time budget of 2 s/);
    }
    // the pool works again after its threads were stopped
    const key = await pbkdf2(b('passwd'), b('salt'), 1, 64, 'sha256');
    expect(key.toString('hex').slice(0, 16)).toBe('55ac046e56e3089f');
  }, 120_000);
});
