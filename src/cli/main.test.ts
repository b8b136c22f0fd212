// Guards the CLI entry: importing main.ts runs nothing (no argv parse, no output, no exit code); main(argv) runs one command line.
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { filesMatching } from '../test-helpers/source-files.test-helper.js';

const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

function captureConsole(): { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void (out += `${a.join(' ')}\n`));
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += `${a.join(' ')}\n`));
  return { out: () => out, err: () => err };
}

/** The CLI's source files (not tests) whose text matches `re`, relative to src/cli. */
function cliFilesMatching(re: RegExp): string[] {
  return filesMatching(re, { under: 'cli' }).map((f) => f.slice('cli/'.length));
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('cli main', () => {
  it('has no side effect on import: it neither parses process.argv nor prints nor sets an exit code', async () => {
    const argv = process.argv;
    const exitCode = process.exitCode;
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => {
      throw new Error('process.exit called on import');
    });
    const io = captureConsole();
    // what would print the version (and set exit code 0) if the module ran the command line when loaded
    process.argv = [argv[0] ?? 'node', '/usr/bin/atrest', '--version'];
    try {
      const mod = await import('./main.js');
      await new Promise((r) => setTimeout(r, 50));
      expect(typeof mod.main).toBe('function');
    } finally {
      process.argv = argv;
    }
    expect(io.out()).toBe('');
    expect(io.err()).toBe('');
    expect(exit).not.toHaveBeenCalled();
    expect(process.exitCode).toBe(exitCode);
  });

  it('main(argv) runs the given words and returns the exit code', async () => {
    const { main } = await import('./main.js');
    const io = captureConsole();
    expect(await main(['--version'])).toBe(0);
    expect(io.out()).toBe(`${VERSION}\n`);
    expect(await main(['no-such-command'])).toBe(2);
    expect(io.err()).toBe('atrest: Unknown argument: no-such-command\n');
  });

  it('reports an error as JSON on stdout too with --json', async () => {
    const { main } = await import('./main.js');
    const io = captureConsole();
    expect(await main(['format', 'x.img', '--size', 'abc', '--json'])).toBe(2);
    expect(JSON.parse(io.out())).toEqual({ error: { code: 'USAGE', message: 'Unknown argument: json' } });
    expect(io.err()).toBe('atrest: Unknown argument: json\n');
  });
});

describe('cli: one place for each', () => {
  it('prints JSON in one function (render/json.ts)', () => {
    expect(cliFilesMatching(/JSON\.stringify\([^\n]*,\s*null,\s*2\)/)).toEqual(['render/json.ts']);
  });

  it('turns an error into its message and exit code in one place (failure.ts)', () => {
    expect(cliFilesMatching(/\bexitCodeOf\(|\.oneLine\(\)|\.fail\(/)).toEqual(['failure.ts', 'main.ts']);
    expect(cliFilesMatching(/\bexitCodeOf\(|\.oneLine\(\)/)).toEqual(['failure.ts']);
    expect(cliFilesMatching(/process\.exit(Code)?\b/)).toEqual([]);
  });
});
