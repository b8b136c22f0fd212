// Bash completion: yargs completes commands and options; this adds open volume names, and image paths fall back to files.
import { readdir } from 'node:fs/promises';
import { VOLUME_NAME_RE } from '../daemon/paths.js';

/** Commands whose first argument can be an open volume's NAME. */
const NAME_COMMANDS = new Set(['close', 'status', 'reencrypt']);
/** Options whose value is an open volume's NAME. */
const NAME_OPTIONS = new Set(['--pause', '--resume']);

/** Names of the open volumes: the disk files in the run directory (a readdir; no file is opened). */
export async function openVolumeNames(runDir: string): Promise<string[]> {
  try {
    return (await readdir(runDir)).filter((n) => VOLUME_NAME_RE.test(n)).sort();
  } catch {
    return [];
  }
}

/**
 * Whether the word being completed is an open volume's NAME. `words` is the command line after the
 * program name, its last element the word being completed.
 */
export function wantsVolumeName(words: readonly string[]): boolean {
  const prev = words.at(-2);
  if (prev !== undefined && NAME_OPTIONS.has(prev)) return true;
  const before = words.slice(0, -1).filter((w) => !w.startsWith('-'));
  return before.length === 1 && NAME_COMMANDS.has(before[0] ?? '');
}

/**
 * The words to offer: volume names where a NAME goes (plus yargs' own, e.g. options), otherwise yargs'
 * completions. An empty list makes bash fall back to file names (the script uses `complete -o default`),
 * which is what an IMAGE argument wants.
 */
export function completions(
  words: readonly string[],
  names: readonly string[],
  defaults: readonly string[],
): string[] {
  const current = words.at(-1) ?? '';
  if (wantsVolumeName(words) && !current.startsWith('-')) return names.filter((n) => n.startsWith(current));
  // yargs lists nothing useful for a positional IMAGE: leave it to the shell's file completion
  return current.startsWith('-') || defaults.some((d) => !d.startsWith('-')) ? [...defaults] : [];
}
