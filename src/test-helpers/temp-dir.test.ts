import { stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useTempDir } from './temp-dir.test-helper.js';

let seen: string | undefined;

describe('useTempDir', () => {
  const dir = useTempDir('atrest-tempdir-');

  let early: unknown;
  try {
    dir();
  } catch (err) {
    early = err;
  }

  it('refuses to be read at load time, before beforeAll made it', () => {
    expect(String(early)).toMatch(/made in a before hook/);
  });

  it('makes a private directory with the prefix under the temp directory', async () => {
    seen = dir();
    expect(dirname(seen)).toBe(tmpdir());
    expect(basename(seen)).toMatch(/^atrest-tempdir-.{6}$/);
    expect((await stat(seen)).isDirectory()).toBe(true);
    await writeFile(join(seen, 'f'), 'x');
  });
});

describe('useTempDir per test', () => {
  const dir = useTempDir('atrest-tempdir-each-', { perTest: true });
  const dirs: string[] = [];

  it('gives the first test a directory', () => {
    dirs.push(dir());
  });

  it('gives the next test a new one, the previous one removed', async () => {
    dirs.push(dir());
    expect(dirs[1]).not.toBe(dirs[0]);
    await expect(stat(dirs[0] ?? '')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

afterAll(async () => {
  // the block's afterAll ran first: the directory and its file are gone
  expect(seen).toBeDefined();
  await expect(stat(seen ?? '')).rejects.toMatchObject({ code: 'ENOENT' });
});
