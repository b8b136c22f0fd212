// Unit-test helper (not built into dist/): atrest's own source files, for the guard tests that check where something is written.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** The src/ directory. */
export const SRC = new URL('..', import.meta.url).pathname;

export interface SourceQuery {
  /** Also the tests and test helpers (default: only what is built into dist/). */
  tests?: boolean;
  /** Only below this src/-relative directory (default: all of src/). */
  under?: string;
}

function walk(dir: string, tests: boolean): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? walk(join(dir, e.name), tests)
      : e.name.endsWith('.ts') && (tests || !/\.test(-helper)?\.ts$/.test(e.name))
        ? [join(dir, e.name)]
        : [],
  );
}

/** The src/-relative paths of the .ts files the query selects, sorted. */
export function sourceFiles(q: SourceQuery = {}): string[] {
  return walk(join(SRC, q.under ?? ''), q.tests ?? false)
    .map((f) => relative(SRC, f))
    .sort();
}

/** The text of a src/-relative file. */
export function sourceText(file: string): string {
  return readFileSync(join(SRC, file), 'utf8');
}

/** The src/-relative files the query selects whose text matches `re`, sorted. */
export function filesMatching(re: RegExp, q: SourceQuery = {}): string[] {
  return sourceFiles(q).filter((f) => re.test(sourceText(f)));
}
