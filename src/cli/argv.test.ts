import yargs from 'yargs';
import { describe, expect, it } from 'vitest';
import { joinStdinValues } from './argv.js';

/** A parser shaped like atrest's (strict, positionals, a string and an array --key-file). */
async function parse(argv: string[]): Promise<Record<string, unknown>> {
  return yargs(argv)
    .command('open <image> <name>', 'open', (y) =>
      y
        .positional('image', { type: 'string' })
        .positional('name', { type: 'string' })
        .option('key-file', { type: 'string' }),
    )
    .command('reencrypt <target>', 'reencrypt', (y) =>
      y.positional('target', { type: 'string' }).option('key-file', { type: 'string', array: true }),
    )
    .strict()
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .parseAsync();
}

describe('--key-file - (standard input)', () => {
  it('yargs alone refuses `--key-file -` with "Unknown argument: -" (why joinStdinValues exists)', async () => {
    await expect(parse(['open', 'img', 'v', '--key-file', '-'])).rejects.toThrow(/Unknown argument: -/);
  });

  it('is joined to --key-file=- wherever it appears, and then parses like cryptsetup takes it', async () => {
    expect(joinStdinValues(['open', 'img', 'v', '--key-file', '-'])).toEqual([
      'open',
      'img',
      'v',
      '--key-file=-',
    ]);
    expect(await parse(joinStdinValues(['open', 'img', 'v', '--key-file', '-']))).toMatchObject({
      image: 'img',
      name: 'v',
      'key-file': '-',
    });
    expect(await parse(joinStdinValues(['open', '--key-file', '-', 'img', 'v']))).toMatchObject({
      image: 'img',
      name: 'v',
      'key-file': '-',
    });
    expect(
      await parse(
        joinStdinValues(['reencrypt', 'v', '--key-file', '-', '--key-file', '/k/2', '--keyFile', '-']),
      ),
    ).toMatchObject({ target: 'v', 'key-file': ['-', '/k/2', '-'] });
  });

  it('leaves everything else alone: other values, other options, a lone -, and anything after --', () => {
    const same = [
      ['open', 'img', 'v', '--key-file', '/k'],
      ['open', 'img', 'v', '--key-file=-'],
      ['open', 'img', 'v', '--header', '-'],
      ['open', 'img', 'v', '-'],
      ['open', 'img', 'v', '--key-file'],
      ['open', 'img', 'v', '--', '--key-file', '-'],
    ];
    for (const a of same) expect(joinStdinValues(a)).toEqual(a);
    expect(joinStdinValues(['x', '--key-file', '-', '--', '--key-file', '-'])).toEqual([
      'x',
      '--key-file=-',
      '--',
      '--key-file',
      '-',
    ]);
  });
});
