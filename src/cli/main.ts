// The `atrest` command line: parses arguments, runs format locally, drives the daemon for the rest.
import { access, constants as fsConstants } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { AtrestError, ERROR_CODES, exitCodeOf, isAtrestError } from '../errors/index.js';
import { readKeyFile } from '../keys/index.js';
import { formatLuks2 } from '../luks2/index.js';
import { ensureDaemon, request, waitForDaemonExit } from '../daemon/client.js';
import { runtimePaths } from '../daemon/paths.js';
import { Daemon } from '../daemon/server.js';
import type { VolumeStatus } from '../daemon/protocol.js';
import { formatBytes, parseSize } from './size.js';

const ENTRY = fileURLToPath(new URL('../../bin/atrest.js', import.meta.url));

function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new AtrestError('NOT_ROOT', 'atrest must run as root to serve volumes', {
      hint: 'run it with sudo',
    });
  }
}

async function requireFuse(): Promise<void> {
  try {
    await access('/dev/fuse', fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    throw new AtrestError('NO_FUSE', '/dev/fuse is missing or not accessible', {
      hint: 'load the fuse module (modprobe fuse) and install libfuse2 (apt-get install libfuse2 fuse3)',
    });
  }
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A key from --key-file FILE, or from standard input with --key-file -. */
async function loadKey(keyFile: string): Promise<Buffer> {
  if (keyFile !== '-') return readKeyFile(keyFile);
  const key = await readStdin();
  if (key.length === 0) throw new AtrestError('USAGE', 'no key arrived on standard input');
  return key;
}

function printStatus(list: VolumeStatus[]): void {
  if (list.length === 0) {
    console.log('no open volumes');
    return;
  }
  for (const v of list) {
    console.log(`${v.name}: ${v.diskPath}`);
    const rows: Array<[string, string]> = [
      ['image', v.image],
      ['header', v.header === v.image ? `${v.header} (attached)` : `${v.header} (detached)`],
      ['uuid', v.uuid],
      ['cipher', v.cipher],
      ['sector size', `${v.sectorSize} bytes`],
      ['size', `${formatBytes(v.size)} (${v.size} bytes)`],
      ['key slot', String(v.keyslot)],
      ['mode', v.readOnly ? 'read-only' : 'read-write'],
      ['loop device', v.loopDevice ?? '-'],
      ['read', formatBytes(v.bytesRead)],
      ['written', formatBytes(v.bytesWritten)],
    ];
    for (const [k, val] of rows) console.log(`  ${k.padEnd(12)} ${val}`);
  }
}

const EXIT_CODE_TABLE = Object.entries(ERROR_CODES)
  .map(([code, { exit }]) => `  ${String(exit).padStart(3)}  ${code}`)
  .join('\n');

export async function main(argv: string[]): Promise<number> {
  const paths = runtimePaths();
  let exitCode = 0;
  const cli = yargs(argv)
    .scriptName('atrest')
    .usage(
      '$0 <command> [options]\n\nEncryption at rest for disk images: LUKS2 volumes served as plaintext files.',
    )
    .command(
      'format <image>',
      'create a new LUKS2 volume (aes-xts-plain64)',
      (y) =>
        y
          .positional('image', { type: 'string', demandOption: true, describe: 'image file to create' })
          .option('size', { type: 'string', demandOption: true, describe: 'data size, e.g. 64M or 10G' })
          .option('key-file', {
            type: 'string',
            demandOption: true,
            describe: 'passphrase file (- for stdin)',
          })
          .option('sector-size', { type: 'number', choices: [512, 1024, 2048, 4096], default: 4096 })
          .option('header', { type: 'string', describe: 'detached header file (data then starts at 0)' })
          .option('label', { type: 'string', describe: 'LUKS2 label' })
          .option('iter-time', { type: 'number', describe: 'PBKDF2 benchmark target in ms (default 1000)' })
          .option('pbkdf-force-iterations', { type: 'number', describe: 'fixed PBKDF2 iteration count' }),
      async (a) => {
        const size = parseSize(a.size);
        const sectorSize = a['sector-size'] as 512 | 1024 | 2048 | 4096;
        if (size % sectorSize !== 0) {
          throw new AtrestError('USAGE', `size ${size} is not a multiple of the sector size ${sectorSize}`, {
            hint: `use a multiple of ${sectorSize} bytes`,
          });
        }
        const passphrase = await loadKey(a['key-file']);
        try {
          const r = await formatLuks2({
            imagePath: resolve(a.image),
            ...(a.header !== undefined ? { headerPath: resolve(a.header) } : {}),
            dataSize: size,
            sectorSize,
            ...(a.label !== undefined ? { label: a.label } : {}),
            passphrase,
            ...(a['pbkdf-force-iterations'] !== undefined
              ? { pbkdf2Iterations: a['pbkdf-force-iterations'] }
              : {}),
            ...(a['iter-time'] !== undefined ? { iterTimeMs: a['iter-time'] } : {}),
          });
          console.log(`formatted ${a.image}: LUKS2, aes-xts-plain64, ${formatBytes(size)}, uuid ${r.uuid}`);
        } finally {
          passphrase.fill(0);
        }
      },
    )
    .command(
      'open <image> <name>',
      'serve the decrypted volume as /run/atrest/NAME',
      (y) =>
        y
          .positional('image', { type: 'string', demandOption: true })
          .positional('name', { type: 'string', demandOption: true })
          .option('key-file', { type: 'string', describe: 'passphrase file (- for stdin)' })
          .option('header', { type: 'string', describe: 'detached header file' })
          .option('bench-plain', { type: 'boolean', default: false, hidden: true })
          .option('read-only', { type: 'boolean', default: false })
          .option('loop', { type: 'boolean', default: false, describe: 'also attach a loop device' }),
      async (a) => {
        requireRoot();
        await requireFuse();
        const keyFile = a['key-file'];
        const keyArgs: { keyFile?: string; keyData?: string; benchPlain?: boolean } = {};
        if (a['bench-plain']) {
          keyArgs.benchPlain = true;
        } else if (keyFile === undefined) {
          throw new AtrestError('USAGE', 'open needs --key-file FILE', { hint: 'see atrest open --help' });
        } else if (keyFile === '-') {
          const key = await loadKey('-');
          keyArgs.keyData = key.toString('base64');
          key.fill(0);
        } else {
          keyArgs.keyFile = resolve(keyFile);
        }
        await ensureDaemon(paths, ENTRY);
        const v = (await request(paths, {
          op: 'open',
          image: resolve(a.image),
          name: a.name,
          ...keyArgs,
          ...(a.header !== undefined ? { header: resolve(a.header) } : {}),
          readOnly: a['read-only'],
          loop: a.loop,
        })) as VolumeStatus;
        console.log(v.diskPath);
        if (v.loopDevice) console.log(v.loopDevice);
      },
    )
    .command(
      'close <name>',
      'flush, detach the loop device, stop serving NAME and wipe its keys',
      (y) => y.positional('name', { type: 'string', demandOption: true }),
      async (a) => {
        requireRoot();
        await request(paths, { op: 'close', name: a.name });
      },
    )
    .command(
      'status [name]',
      'show open volumes',
      (y) => y.positional('name', { type: 'string' }).option('json', { type: 'boolean', default: false }),
      async (a) => {
        requireRoot();
        let list: VolumeStatus[];
        try {
          list = (await request(
            paths,
            a.name === undefined ? { op: 'status' } : { op: 'status', name: a.name },
          )) as VolumeStatus[];
        } catch (err) {
          if (!(isAtrestError(err) && err.code === 'DAEMON_UNAVAILABLE' && a.name === undefined)) throw err;
          list = [];
        }
        if (a.json) console.log(JSON.stringify({ volumes: list }, null, 2));
        else printStatus(list);
      },
    )
    .command(
      'daemon',
      'run the daemon that serves open volumes (started by open when needed)',
      (y) =>
        y
          .option('log-level', {
            type: 'string',
            default: 'info',
            choices: ['debug', 'info', 'warn', 'error'],
          })
          .option('stop', {
            type: 'boolean',
            default: false,
            describe: 'ask the running daemon to close all and exit',
          }),
      async (a) => {
        requireRoot();
        if (a.stop) {
          await request(paths, { op: 'shutdown' });
          await waitForDaemonExit(paths, 60_000);
          return;
        }
        await requireFuse();
        const d = new Daemon({ paths, logLevel: a['log-level'] });
        await d.start();
        exitCode = -1; // keep running
      },
    )
    .demandCommand(1, 'name a command')
    .strict()
    .epilog(`Exit codes:\n  ${String(0).padStart(3)}  success\n${EXIT_CODE_TABLE}`)
    .fail((msg, err) => {
      if (err) throw err;
      throw new AtrestError('USAGE', msg);
    })
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 100));
  try {
    await cli.parseAsync();
  } catch (err) {
    if (isAtrestError(err)) {
      console.error(`atrest: ${err.oneLine()}`);
    } else {
      console.error(`atrest: internal error: ${err instanceof Error ? err.message : String(err)}`);
      if (process.env.ATREST_DEBUG) console.error(err);
    }
    return exitCodeOf(err);
  }
  return exitCode;
}

const code = await main(hideBin(process.argv));
if (code >= 0) process.exitCode = code;
