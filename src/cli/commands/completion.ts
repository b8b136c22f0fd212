// `atrest completion` (the bash script) and `--get-yargs-completions` (what bash asks for): yargs' words plus open volume NAMEs.
import type { Argv, FallbackCompletionFunction } from 'yargs';
import { completions, openVolumeNames } from '../completion.js';

/** The description of `atrest completion` under "Commands:". */
export const COMPLETION_DESCRIBE = 'print the bash completion script (scripts/install installs it)';

/** yargs' completion function: its own words, with open volume names where a NAME goes (see completion.ts). */
export function completionFunction(argv: readonly string[], runDir: string): FallbackCompletionFunction {
  return ((_current: string, _argv: unknown, defaultCompletions, done) => {
    // the words after the program name; the last one is being completed
    const words = argv.slice(argv.indexOf('--get-yargs-completions') + 2);
    void openVolumeNames(runDir).then((names) => {
      defaultCompletions((_err, defaults) => {
        done(completions(words, names, defaults ?? []));
      });
    });
  }) satisfies FallbackCompletionFunction;
}

/**
 * Answers bash (argv holds --get-yargs-completions at index `at`): prints the completions, and never
 * an error, which would land on the user's screen.
 */
export async function printCompletions(cli: Argv, argv: readonly string[], at: number): Promise<void> {
  try {
    for (const c of await cli.getCompletion(argv.slice(at + 1))) console.log(c);
  } catch {
    // nothing to offer: bash falls back to file names
  }
}
