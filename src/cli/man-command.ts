// The atrest(8) page's input: collects the CLI's own --help texts (by running itself) and renders the page from them.
import { spawn } from 'node:child_process';
import { AtrestError } from '../errors/index.js';
import { renderManPage, type CommandHelp } from './manpage.js';

/** Runs `node ENTRY ...args --help` at a fixed width and returns what it printed. */
function helpOf(entry: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry, ...args, '--help'], {
      env: { ...process.env, COLUMNS: '78' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else
        reject(new AtrestError('INTERNAL', `atrest ${args.join(' ')} --help exited ${code}: ${err.trim()}`));
    });
  });
}

/** The command words listed under "Commands:" in a help text, e.g. ['format', 'open', 'key']. */
export function listedCommands(help: string, parent: string[]): string[] {
  const lines = help.split('\n');
  const start = lines.findIndex((l) => l.trim() === 'Commands:');
  if (start < 0) return [];
  const names: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '') break;
    const m = /^\s{2}atrest\s+(.*)$/.exec(line);
    if (m === null) continue; // a wrapped description
    const words = (m[1] ?? '').split(/\s+/);
    const own = words.slice(parent.length).find((w) => w !== '');
    if (own !== undefined && /^[a-z][\w-]*$/.test(own)) names.push(own);
  }
  return names;
}

/** The one-line description of command NAME in a "Commands:" list (for commands whose --help is not help). */
function listedDescription(help: string, name: string): string {
  const line = help.split('\n').find((l) => new RegExp(`^\\s{2}atrest ${name}(\\s|$)`).test(l)) ?? '';
  return line.replace(/^\s*atrest \S+\s*/, '').trim();
}

/** Every command and subcommand's help, in the order the CLI lists them (run 4 at a time). */
export async function collectHelp(entry: string): Promise<{ top: string; commands: CommandHelp[] }> {
  const top = await helpOf(entry, []);
  const names = listedCommands(top, []);
  const helps = await inBatches(names, (name) =>
    // `completion --help` prints the script itself: describe it from the list instead
    name === 'completion'
      ? Promise.resolve(`atrest completion\n\n${listedDescription(top, name)}\n`)
      : helpOf(entry, [name]),
  );
  const commands: CommandHelp[] = [];
  for (const [i, name] of names.entries()) {
    const help = helps[i] ?? '';
    const subs = listedCommands(help, [name]);
    if (subs.length === 0) {
      commands.push({ name, help });
      continue;
    }
    const subHelps = await inBatches(subs, (sub) => helpOf(entry, [name, sub]));
    subs.forEach((sub, j) => commands.push({ name: `${name} ${sub}`, help: subHelps[j] ?? '' }));
  }
  return { top, commands };
}

async function inBatches<T>(items: string[], fn: (item: string) => Promise<T>, width = 4): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < items.length; i += width) {
    results.push(...(await Promise.all(items.slice(i, i + width).map(fn))));
  }
  return results;
}

export async function manPage(entry: string, version: string, date: string): Promise<string> {
  const { top, commands } = await collectHelp(entry);
  return renderManPage({ version, top, commands, date });
}
