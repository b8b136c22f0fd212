// Guards the split of the volume service by concern (issue 12): each concern has one home, checked on the source text.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = new URL('..', import.meta.url).pathname;
const DAEMON = new URL('.', import.meta.url).pathname;

/** Non-test .ts files under `dir`, recursively. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(join(dir, e.name))
      : e.name.endsWith('.ts') && !/\.test(-helper)?\.ts$/.test(e.name)
        ? [join(dir, e.name)]
        : [],
  );
}

/** The src/-relative files under `dir` whose text matches `re`. */
function matching(dir: string, re: RegExp): string[] {
  return sources(dir)
    .filter((f) => re.test(readFileSync(f, 'utf8')))
    .map((f) => relative(SRC, f))
    .sort();
}

describe('the volume service, one concern per file', () => {
  it('runs losetup, and mounts and unmounts loop devices, only in fuse/blockdev.ts', () => {
    expect(matching(SRC, /spawnHelper\(\s*'losetup'/)).toEqual(['fuse/blockdev.ts']);
    expect(matching(DAEMON, /spawnHelper\(\s*'u?mount'/)).toEqual([]);
  });

  it('starts and resumes conversions with keys only in daemon/online-conversion.ts', () => {
    const calls = /\b(openConversion|startReencrypt)\(/;
    const definitions = /export async function (openConversion|startReencrypt)\b/;
    const callers = sources(DAEMON).filter((f) => {
      const text = readFileSync(f, 'utf8');
      return calls.test(text.replace(new RegExp(definitions.source, 'g'), ''));
    });
    expect(callers.map((f) => relative(SRC, f))).toEqual(['daemon/online-conversion.ts']);
  });

  it('schedules the KEK check in daemon/key-watch.ts only, on the unwedgeable Periodic', () => {
    expect(matching(DAEMON, /new Periodic\(/)).toEqual(['daemon/key-watch.ts']);
  });
});
