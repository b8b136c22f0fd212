// Unit-test helper (not built into dist/): a private temporary directory per test file, describe block or test, made before and removed after.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';

export interface TempDirOptions {
  /** A fresh directory for every test (beforeEach/afterEach) instead of one for all (beforeAll/afterAll). */
  perTest?: boolean;
  /** Where to make it (default: the system temp directory). */
  parent?: string;
}

/**
 * Registers hooks (in the calling file or describe block) that make a directory `prefix` + random
 * and remove it with all it holds. Returns its path getter: call it inside tests and hooks, not at
 * load time.
 */
export function useTempDir(prefix: string, opts: TempDirOptions = {}): () => string {
  let dir: string | undefined;
  const parent = opts.parent ?? tmpdir();
  (opts.perTest ? beforeEach : beforeAll)(async () => {
    dir = await mkdtemp(join(parent, prefix));
  });
  (opts.perTest ? afterEach : afterAll)(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });
  return () => {
    if (dir === undefined) {
      throw new Error(`useTempDir(${prefix}): the directory is made in a before hook; use it in tests`);
    }
    return dir;
  };
}
