import { describe, expect, it } from 'vitest';
import { sourceFiles, sourceText } from '../test-helpers/source-files.test-helper.js';
import { ENV_VARS } from '../errors/env.js';
import { ERROR_CODES } from '../errors/index.js';
import { completions, wantsVolumeName } from './completion.js';
import { listedCommands } from './man-command.js';
import { ENVIRONMENT, EXIT_MEANINGS, helpParts, renderManPage, troffEscape } from './manpage.js';

const HELP = `atrest close <name>

flush, detach the loop device, stop serving NAME
and wipe its keys

Positionals:
  name                                  [string] [required]

Options:
  --help  Show help                               [boolean]`;

describe('atrest(8)', () => {
  it('documents every environment variable atrest reads (or marks it internal)', () => {
    // every variable named in src/ is in the one table (src/errors/env.ts), and only that file reads them
    const named = new Set<string>();
    const directReads: string[] = [];
    for (const f of sourceFiles({ tests: true }).filter((f) => !f.endsWith('.test.ts'))) {
      const text = sourceText(f);
      for (const m of text.matchAll(/['"`](ATREST_[A-Z0-9_]+)['"`]/g)) named.add(m[1] ?? '');
      for (const m of text.matchAll(/\benv(?:\.|\[['"])(ATREST_[A-Z0-9_]+)/g))
        directReads.push(`${f}: ${m[1] ?? ''}`);
    }
    const table = new Set<string>(ENV_VARS.map((v) => v.name));
    expect([...named].filter((n) => !table.has(n)).sort()).toEqual([]);
    expect(named.size).toBeGreaterThan(15);
    expect(directReads).toEqual([]);
    // the man page lists every variable that is not internal, with its default
    const page = ENV_VARS.filter((v) => !('internal' in v)).map((v) => v.name);
    expect(ENVIRONMENT.map(([n]) => n)).toEqual(page);
    expect(ENVIRONMENT).toContainEqual(['ATREST_KDF_MAX_SECONDS', expect.stringContaining('(default 60)')]);
    expect(ENVIRONMENT.map(([n]) => n)).not.toContain('ATREST_TEST_KILL_AT');
  });

  it('explains every exit code of the error table', () => {
    const exits = new Set(Object.values(ERROR_CODES).map((e) => e.exit));
    for (const exit of exits) expect(EXIT_MEANINGS[exit], `exit ${exit}`).toBeTruthy();
  });

  it('splits a help text into usage, description and the rest', () => {
    const p = helpParts(HELP);
    expect(p.usage).toBe('atrest close <name>');
    expect(p.description).toBe('flush, detach the loop device, stop serving NAME and wipe its keys');
    expect(p.rest.startsWith('Positionals:')).toBe(true);
    expect(p.rest).toContain('--help');
    expect(helpParts('atrest x\n\nOptions:\n  --a  b').description).toBe('');
  });

  it('escapes troff requests, backslashes and hyphens', () => {
    expect(troffEscape(".TH evil\n'x\na\\b --c")).toBe("\\&.TH evil\n\\&'x\na\\eb \\-\\-c");
  });

  it('renders every command with its usage, options and the exit codes', () => {
    const page = renderManPage({
      version: '9.9.9',
      date: '2026-01-02',
      top: 'atrest <command>\n\nabout\n\nOptions:\n  --fips  FIPS',
      commands: [{ name: 'close', help: HELP }],
    });
    expect(page).toMatch(/^\.\\" /);
    expect(page).toContain('.TH ATREST 8 "2026-01-02" "atrest 9.9.9"');
    expect(page).toContain('.SS atrest close <name>');
    expect(page).toContain('\\-\\-help');
    expect(page).toContain('\\-\\-fips');
    for (const section of [
      'NAME',
      'SYNOPSIS',
      'COMMANDS',
      'EXIT STATUS',
      'ENVIRONMENT',
      'FILES',
      'EXAMPLES',
    ]) {
      expect(page).toContain(`.SH ${section}`);
    }
    for (const code of Object.keys(ERROR_CODES)) expect(page).toContain(code);
  });

  it('reads the command words of a "Commands:" list', () => {
    const top = `atrest <command>\n\nCommands:\n  atrest format <image>   create\n                          more text\n  atrest key              keys\n\nOptions:\n  --x`;
    expect(listedCommands(top, [])).toEqual(['format', 'key']);
    expect(
      listedCommands(
        'atrest key\n\nCommands:\n  atrest key rotate <image>  r\n  atrest key list <image>  l\n',
        ['key'],
      ),
    ).toEqual(['rotate', 'list']);
  });
});

describe('bash completion', () => {
  it('offers open volume names where a NAME goes', () => {
    expect(wantsVolumeName(['close', ''])).toBe(true);
    expect(wantsVolumeName(['status', 'v'])).toBe(true);
    expect(wantsVolumeName(['reencrypt', ''])).toBe(true);
    expect(wantsVolumeName(['encrypt', '--pause', ''])).toBe(true);
    expect(wantsVolumeName(['open', ''])).toBe(false);
    expect(wantsVolumeName(['close', 'vm', ''])).toBe(false);
    expect(completions(['close', 'v'], ['data', 'vm1', 'vm2'], ['--help'])).toEqual(['vm1', 'vm2']);
  });

  it("leaves an IMAGE to the shell's file completion and keeps yargs' commands and options", () => {
    expect(completions(['open', ''], ['vm1'], ['--help', '--loop'])).toEqual([]);
    expect(completions(['open', '--l'], [], ['--help', '--loop'])).toEqual(['--help', '--loop']);
    expect(completions([''], [], ['format', 'open'])).toEqual(['format', 'open']);
  });
});
