// How a failed command ends, in one place: usage errors from yargs, the error on stderr (and as JSON with --json), the exit code.
import { envSet } from '../errors/env.js';
import { AtrestError, ERROR_CODES, exitCodeOf, isAtrestError } from '../errors/index.js';
import { printJson } from './render/json.js';

/** yargs' .fail(): a parse error (unknown option, missing argument) is a USAGE error; a thrown one goes on. */
export function usageFailure(msg: string, err: Error | undefined): never {
  if (err) throw err;
  throw new AtrestError('USAGE', msg);
}

const EXIT_CODE_TABLE = Object.entries(ERROR_CODES)
  .map(([code, { exit }]) => `  ${String(exit).padStart(3)}  ${code}`)
  .join('\n');

/** The end of `atrest --help`: every exit code and the error codes that use it. */
export const EXIT_CODES_EPILOG = `Exit codes:\n  ${String(0).padStart(3)}  success\n${EXIT_CODE_TABLE}`;

/** Prints a command's error for people (stderr) and, with --json, for scripts (stdout); returns the exit code. */
export function reportFailure(err: unknown, argv: readonly string[]): number {
  // with --json, scripts also get the error as JSON on stdout: {"error": {"code", "message", "hint", "path"}}
  if (argv.includes('--json')) {
    const json = isAtrestError(err)
      ? err.toJSON()
      : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
    printJson({ error: json });
  }
  if (isAtrestError(err)) {
    console.error(`atrest: ${err.oneLine()}`);
  } else {
    console.error(`atrest: internal error: ${err instanceof Error ? err.message : String(err)}`);
    if (envSet('ATREST_DEBUG') !== undefined) console.error(err);
  }
  return exitCodeOf(err);
}
