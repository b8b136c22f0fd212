// Unit-test helper (not built into dist/): a private temporary directory per test file or describe block, made before and removed after its tests.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';

/**
 * Registers beforeAll/afterAll hooks (in the calling file or describe block) that make a directory
 * `prefix` + random under `parent` (default the system temp directory) and remove it with all it
 * holds. Returns its path getter: call it inside tests and hooks, not at load time.
 */
export function useTempDir(prefix: string, parent: string = tmpdir()): () => string {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(parent, prefix));
  });
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (dir === undefined)
      throw new Error(`useTempDir(${prefix}): the directory is made in beforeAll; use it in tests`);
    return dir;
  };
}
