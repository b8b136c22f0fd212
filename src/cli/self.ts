// Where this CLI lives: the path of bin/atrest.js (to start the daemon and render the man page) and the package version.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** bin/atrest.js: what `open` starts the daemon with and `man` runs for the help texts. */
export const ENTRY = fileURLToPath(new URL('../../bin/atrest.js', import.meta.url));

/** The version in package.json, read only by the commands that print it (not at every start-up). */
export function version(): string {
  const pkg = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(pkg) as { version: string }).version;
}
