// The shape of one `atrest` command (its yargs options, a verify step, an action) and how main() registers it.
import type { ArgumentsCamelCase, Argv } from 'yargs';
import type { CliContext } from './context.js';

/**
 * One command, like an entry of cryptsetup's action_types[]: `options` declares its positionals and
 * options, `verify` checks what can be checked before anything changes (arguments, root, /dev/fuse)
 * and returns what it parsed, `action` does the work and prints the result through render/.
 * A command without an action only groups subcommands (`key`).
 */
export interface AtrestCommand<T = object, V = void> {
  command: string;
  /** The line under "Commands:"; false hides the command from --help. */
  describe: string | false;
  options: (y: Argv, ctx: CliContext) => Argv<T>;
  verify?: (a: ArgumentsCamelCase<T>, ctx: CliContext) => V | Promise<V>;
  action?: (a: ArgumentsCamelCase<T>, ctx: CliContext, checked: V) => Promise<void>;
}

/** Declares a command, inferring its argument types from its options. */
export function defineCommand<T, V = void>(c: AtrestCommand<T, V>): AtrestCommand<T, V> {
  return c;
}

/** Registers a command on a parser: its handler runs verify, then action. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a list of commands of different argument types
export function register(y: Argv, c: AtrestCommand<any, any>, ctx: CliContext): Argv {
  const { action, verify } = c;
  return y.command({
    command: c.command,
    describe: c.describe,
    builder: (b: Argv) => c.options(b, ctx),
    handler:
      action === undefined
        ? () => {} // what yargs runs for a command given no handler
        : async (a: ArgumentsCamelCase) => {
            const checked: unknown = verify === undefined ? undefined : await verify(a, ctx);
            await action(a, ctx, checked);
          },
  });
}
