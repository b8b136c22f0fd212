// Command-line arguments yargs cannot take as written: `--key-file -` (standard input) becomes `--key-file=-`.

/**
 * Options whose value may be `-` (standard input), as cryptsetup accepts `--key-file -`. yargs-parser
 * never takes a lone `-` as an option's value (it reads it as a positional, and strict mode then
 * fails with "Unknown argument: -"), while `--key-file=-` works.
 */
export const STDIN_VALUE_OPTIONS: readonly string[] = ['--key-file', '--keyFile'];

/**
 * Joins `--key-file -` into `--key-file=-` for every option in STDIN_VALUE_OPTIONS, wherever it
 * appears, up to a `--` (after which everything is positional and left alone). Other arguments are
 * returned unchanged, in order.
 */
export function joinStdinValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (STDIN_VALUE_OPTIONS.includes(a) && argv[i + 1] === '-') {
      out.push(`${a}=-`);
      i++;
      continue;
    }
    out.push(a);
  }
  return out;
}
