// The `atrest` command line: main(argv) parses the arguments, runs one command and returns the exit code (importing it runs nothing).
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { requireFips } from '../crypto/index.js';
import { runtimePaths } from '../daemon/paths.js';
import { joinStdinValues } from './argv.js';
import { register, type AtrestCommand } from './command.js';
import { closeCommand } from './commands/close.js';
import { COMPLETION_DESCRIBE, completionFunction, printCompletions } from './commands/completion.js';
import { configCommand } from './commands/config.js';
import { daemonCommand } from './commands/daemon.js';
import { encryptCommand } from './commands/encrypt.js';
import { formatCommand } from './commands/format.js';
import { keyCommand } from './commands/key.js';
import { manCommand } from './commands/man.js';
import { openCommand } from './commands/open.js';
import { reencryptCommand } from './commands/reencrypt.js';
import { statusCommand } from './commands/status.js';
import { createContext } from './context.js';
import { EXIT_CODES_EPILOG, reportFailure, usageFailure } from './failure.js';
import { globalOptions, globalsOf } from './options.js';
import { version } from './self.js';

/** Every command, in the order --help lists them (`completion` follows: yargs makes that one). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- commands of different argument types
const COMMANDS: ReadonlyArray<AtrestCommand<any, any>> = [
  formatCommand,
  openCommand,
  closeCommand,
  statusCommand,
  encryptCommand,
  reencryptCommand,
  configCommand,
  keyCommand,
  daemonCommand,
  manCommand,
];

/**
 * Runs the command line `argv` (the words after the program name) and returns its exit code: 0, an
 * error's exit code (src/errors), or -1 when the command keeps the process running (`atrest daemon`).
 */
export async function main(argv: string[] = hideBin(process.argv)): Promise<number> {
  const paths = runtimePaths();
  const ctx = createContext(paths);
  let cli: Argv = globalOptions(
    yargs(joinStdinValues(argv))
      .scriptName('atrest')
      .usage(
        '$0 <command> [options]\n\nEncryption at rest for disk images: LUKS2 volumes served as plaintext files.\n' +
          '`atrest --version` prints the version; `man 8 atrest` has the manual.',
      ),
  ).middleware((a) => {
    ctx.globals = globalsOf(a, paths);
    if (ctx.globals.fips) requireFips();
  });
  for (const c of COMMANDS) cli = register(cli, c, ctx);
  cli = cli
    .completion('completion', COMPLETION_DESCRIBE, completionFunction(argv, paths.runDir))
    .demandCommand(1, 'name a command')
    .strict()
    .epilog(EXIT_CODES_EPILOG)
    .fail(usageFailure)
    .help()
    .version(false) // `key revoke/restore --version N` is theirs; `atrest --version` is handled before parsing
    .wrap(Math.min(110, process.stdout.columns || Number(process.env.COLUMNS) || 100));
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    console.log(version());
    return 0;
  }
  const completing = argv.indexOf('--get-yargs-completions');
  if (completing >= 0) {
    await printCompletions(cli, argv, completing);
    return 0;
  }
  try {
    await cli.parseAsync();
  } catch (err) {
    return reportFailure(err, argv);
  }
  return ctx.keepRunning ? -1 : 0;
}
