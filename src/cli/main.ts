// The `atrest` command line: parses arguments, runs format locally, drives the daemon for the rest.
import { readFileSync } from 'node:fs';
import { access, constants as fsConstants, realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type FallbackCompletionFunction } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { envFlag, envSet, envValue, keyCheckIntervalSeconds } from '../errors/env.js';
import { AtrestError, ERROR_CODES, exitCodeOf, isAtrestError } from '../errors/index.js';
import { fipsActive, requireFips, SECTOR_SIZES } from '../crypto/index.js';
import {
  bindings,
  KeyManager,
  keySourceOf,
  loadProviders,
  readKeyFile,
  redactUri,
  type AuditSink,
} from '../keys/index.js';
import { formatLuks2, readLuks2 } from '../luks2/index.js';
import { adoptSidecar } from '../volume/index.js';
import { fileAuditSink } from '../daemon/audit.js';
import { DEFAULT_CONFIG, loadConfig } from '../daemon/config.js';
import { ensureDaemon, request, requestWithSecrets, waitForDaemonExit } from '../daemon/client.js';
import { runtimePaths } from '../daemon/paths.js';
import { Daemon } from '../daemon/server.js';
import { parseUnreachableGrace } from '../daemon/unreachable-grace.js';
import { fuseSettings, requireFuseBackend } from '../fuse/backend.js';
import type { EncryptionStatus, VolumeStatus } from '../daemon/protocol.js';
import { encryptOffline, progressLine, reencryptOffline } from './convert.js';
import { joinStdinValues } from './argv.js';
import { completions, openVolumeNames } from './completion.js';
import { keyCommands } from './keys.js';
import { manPage } from './man-command.js';
import { writeSecretLine } from './secret-output.js';
import { formatBytes, parseSize } from './size.js';

const ENTRY = fileURLToPath(new URL('../../bin/atrest.js', import.meta.url));
/** The version in package.json, read only by the commands that print it (not at every start-up). */
function version(): string {
  const pkg = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(pkg) as { version: string }).version;
}

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
  try {
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  } finally {
    for (const c of chunks) c.fill(0);
  }
}

/** A key from --key-file FILE, or from standard input with --key-file -. */
async function loadKey(keyFile: string): Promise<Buffer> {
  if (keyFile !== '-') return readKeyFile(keyFile);
  const key = await readStdin();
  if (key.length === 0) throw new AtrestError('USAGE', 'no key arrived on standard input');
  return key;
}

function encryptionRows(e: EncryptionStatus): Array<[string, string]> {
  const rows: Array<[string, string]> = [
    ['encryption', e.enabled ? `on, ${e.cipher}` : 'OFF (benchmark only)'],
    ['key source', e.keySource],
  ];
  if (e.kek !== null) rows.push(['KEK', `${e.kek} (version ${e.kekVersion ?? '?'})`]);
  rows.push(['locked', e.locked ? `yes: ${e.lockedReason ?? ''} (since ${e.lockedAt ?? '?'})` : 'no']);
  const u = e.keyServerUnreachable;
  if (u !== undefined)
    rows.push(['WARNING', `key server unreachable since ${u.since}; locks at ${u.locksAt} (${u.detail})`]);
  return rows;
}

/** Encryption settings of an image that is not open, from its header. */
async function imageEncryption(image: string, header: string | undefined): Promise<EncryptionStatus> {
  const meta = await readLuks2(header ?? image, { imagePath: image });
  const b = bindings(meta)[0];
  return {
    enabled: true,
    cipher: meta.cipher,
    keySource: keySourceOf(b),
    kek: b === undefined ? null : redactUri(b.kek),
    kekVersion: b === undefined ? null : b.version,
    keyslot: b === undefined ? -1 : b.keyslot,
    locked: false,
  };
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
      ...(v.fuseBackend === undefined ? [] : ([['fuse backend', v.fuseBackend]] as Array<[string, string]>)),
      ['read', formatBytes(v.bytesRead)],
      ['written', formatBytes(v.bytesWritten)],
      ...encryptionRows(v.encryption),
      ...(v.conversion === undefined
        ? []
        : ([
            [
              v.conversion.mode === 'encrypt' ? 'encrypting' : 're-encrypting',
              `${v.conversion.state}, ${progressLine(v.conversion)}${v.conversion.error ? ` (${v.conversion.error})` : ''}`,
            ],
          ] as Array<[string, string]>)),
    ];
    rows.unshift(['state', v.error === undefined ? v.state : `${v.state}: ${v.error}`]);
    if (v.mountPoint) rows.push(['mounted on', v.mountPoint]);
    for (const [k, val] of rows) console.log(`  ${k.padEnd(12)} ${val}`);
  }
}

const EXIT_CODE_TABLE = Object.entries(ERROR_CODES)
  .map(([code, { exit }]) => `  ${String(exit).padStart(3)}  ${code}`)
  .join('\n');

export async function main(argv: string[]): Promise<number> {
  const paths = runtimePaths();
  let exitCode = 0;
  let audit: AuditSink | null = null;
  let globals: { keyStore: string; fips: boolean; providers: string } = {
    keyStore: paths.keyStore,
    fips: false,
    providers: paths.providers,
  };
  const manager = (kekOverride?: string): KeyManager => {
    audit ??= fileAuditSink(paths.auditLog, { source: 'cli' });
    return new KeyManager({
      keyStoreDir: globals.keyStore,
      providersFile: globals.providers,
      audit,
      fips: globals.fips,
      ...(kekOverride === undefined ? {} : { kekOverride }),
    });
  };
  const cli = yargs(joinStdinValues(argv))
    .scriptName('atrest')
    .usage(
      '$0 <command> [options]\n\nEncryption at rest for disk images: LUKS2 volumes served as plaintext files.\n' +
        '`atrest --version` prints the version; `man 8 atrest` has the manual.',
    )
    .option('key-store', {
      type: 'string',
      global: true,
      describe: 'platform key store directory (default /var/lib/atrest/keys)',
    })
    .option('providers', {
      type: 'string',
      global: true,
      describe: 'KEK provider configuration (default /etc/atrest/providers.json, env ATREST_PROVIDERS)',
    })
    .option('fips', {
      type: 'boolean',
      global: true,
      default: false,
      describe: "refuse to run unless Node's OpenSSL is in FIPS mode; PBKDF2 key slots only",
    })
    .middleware((a) => {
      const store = a['key-store'];
      const providers = a.providers;
      globals = {
        keyStore: typeof store === 'string' ? resolve(store) : paths.keyStore,
        fips: a.fips === true,
        providers: typeof providers === 'string' ? resolve(providers) : paths.providers,
      };
      if (globals.fips) requireFips();
    })
    .command(
      'format <image>',
      'create a new LUKS2 volume (aes-xts-plain64)',
      (y) =>
        y
          .positional('image', { type: 'string', demandOption: true, describe: 'image file to create' })
          .option('size', { type: 'string', demandOption: true, describe: 'data size, e.g. 64M or 10G' })
          .option('key-file', {
            type: 'string',
            describe: 'passphrase file (- for stdin); without it the volume is bound to the platform key',
          })
          .option('kek', {
            type: 'string',
            describe:
              'bind to this customer KEK instead of the platform key: a provider NAME from providers.json',
          })
          .option('sector-size', { type: 'number', choices: [...SECTOR_SIZES], default: 4096 })
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
        const keyFile = a['key-file'];
        if (keyFile === undefined) {
          if (a['iter-time'] !== undefined || a['pbkdf-force-iterations'] !== undefined) {
            throw new AtrestError('USAGE', '--iter-time and --pbkdf-force-iterations need --key-file', {
              hint: 'key slots bound to a KEK hold a 256-bit random secret and need no stretching',
            });
          }
          const km = manager(a.kek);
          try {
            const r = await km.format(
              {
                imagePath: resolve(a.image),
                ...(a.header !== undefined ? { headerPath: resolve(a.header) } : {}),
                dataSize: size,
                sectorSize,
                ...(a.label !== undefined ? { label: a.label } : {}),
              },
              a.kek,
            );
            const who = a.kek === undefined ? 'platform key' : redactUri(r.ref.uri);
            console.log(
              `formatted ${a.image}: LUKS2, aes-xts-plain64, ${formatBytes(size)}, uuid ${r.uuid}, ` +
                `key slot 0 bound to ${who} (version ${r.ref.version})`,
            );
          } finally {
            km.close();
          }
          return;
        }
        if (a.kek !== undefined) {
          throw new AtrestError('USAGE', 'give either --key-file or --kek, not both', {
            hint: 'format with --kek, then add a passphrase with `atrest key add-recovery`',
          });
        }
        const passphrase = await loadKey(keyFile);
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
          .option('key-file', {
            type: 'string',
            describe: "passphrase file (- for stdin); without it, the volume's platform/customer key",
          })
          .option('kek', {
            type: 'string',
            describe: "the volume's KEK provider NAME, or its pkcs11: URI with a pin-value to log in with",
          })
          .option('header', { type: 'string', describe: 'detached header file' })
          .option('encrypt', {
            type: 'boolean',
            default: false,
            describe: 'encrypt a plaintext image in place (it is rewritten) and serve it meanwhile',
          })
          .option('max-rate', {
            type: 'string',
            describe:
              'cap (bytes per second) of an in-place conversion this open starts or resumes; default none: it yields to foreground I/O adaptively',
          })
          .option('bench-plain', { type: 'boolean', default: false, hidden: true })
          .option('read-only', { type: 'boolean', default: false })
          .option('loop', { type: 'boolean', default: false, describe: 'also attach a loop device' }),
      async (a) => {
        requireRoot();
        await requireFuse();
        const keyFile = a['key-file'];
        const keyArgs: {
          keyFile?: string;
          benchPlain?: boolean;
          kek?: string;
          keyStore: string;
          providers: string;
          fips?: boolean;
        } = { keyStore: globals.keyStore, providers: globals.providers };
        if (a.kek !== undefined) keyArgs.kek = a.kek;
        const maxRate = a['max-rate'] === undefined ? undefined : parseSize(a['max-rate']);
        if (a.encrypt && a.header !== undefined) {
          throw new AtrestError('USAGE', '--encrypt makes an attached header; it does not go with --header', {
            hint: 'to encrypt with a detached header: atrest encrypt IMAGE --header FILE, then atrest open IMAGE NAME --header FILE',
          });
        }
        if (globals.fips) keyArgs.fips = true;
        let stdinKey: Buffer | null = null;
        if (a['bench-plain']) {
          keyArgs.benchPlain = true;
        } else if (keyFile === undefined) {
          // unlocked through the volume's atrest-platform / atrest-cmk token by the daemon
        } else if (keyFile === '-') {
          // crosses the socket as raw bytes after the request (never JSON, never a string); wiped below
          stdinKey = await loadKey('-');
        } else {
          keyArgs.keyFile = resolve(keyFile);
        }
        // a daemon this starts reads ATREST_FUSE_*: a bad value fails now, not after the start timeout
        const fuse = fuseSettings({}, process.env);
        if (fuse.backend !== undefined) requireFuseBackend(fuse.backend);
        let v: VolumeStatus;
        try {
          await ensureDaemon(paths, ENTRY);
          const answer = await requestWithSecrets(
            paths,
            {
              op: 'open',
              image: resolve(a.image),
              name: a.name,
              ...keyArgs,
              ...(maxRate === undefined ? {} : { maxRate }),
              ...(a.header !== undefined ? { header: resolve(a.header) } : {}),
              readOnly: a['read-only'],
              loop: a.loop,
              ...(a.encrypt ? { encrypt: true } : {}),
            },
            stdinKey === null ? [] : [stdinKey],
          );
          for (const s of answer.secrets) s.fill(0);
          v = answer.result as VolumeStatus;
        } finally {
          stdinKey?.fill(0);
        }
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
      'show open volumes, or one by NAME, or the encryption settings of an IMAGE file',
      (y) =>
        y
          .positional('name', { type: 'string', describe: 'volume name or image path' })
          .option('header', { type: 'string', describe: 'detached header file (with an IMAGE)' })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const asImage = a.name !== undefined && (a.name.includes('/') || a.header !== undefined);
        let list: VolumeStatus[];
        try {
          if (typeof process.getuid === 'function' && process.getuid() !== 0) {
            throw new AtrestError('DAEMON_UNAVAILABLE', 'not root: cannot ask the daemon');
          }
          list = (await request(
            paths,
            a.name === undefined || asImage ? { op: 'status' } : { op: 'status', name: a.name },
          )) as VolumeStatus[];
        } catch (err) {
          if (!(isAtrestError(err) && err.code === 'DAEMON_UNAVAILABLE' && (a.name === undefined || asImage)))
            throw err;
          list = [];
        }
        if (asImage && a.name !== undefined) {
          const image = await realpath(a.name).catch(() => resolve(a.name ?? ''));
          const open = list.filter((v) => v.image === image);
          if (open.length > 0) {
            list = open;
          } else {
            const encryption = await imageEncryption(
              image,
              a.header === undefined ? undefined : resolve(a.header),
            );
            if (a.json) console.log(JSON.stringify({ image, open: false, encryption }, null, 2));
            else {
              console.log(`${image}: not open`);
              for (const [k, val] of encryptionRows(encryption)) console.log(`  ${k.padEnd(12)} ${val}`);
            }
            return;
          }
        }
        if (a.json) console.log(JSON.stringify({ volumes: list }, null, 2));
        else printStatus(list);
      },
    )
    .command(
      'encrypt [image]',
      'encrypt a plaintext image in place (resumes an interrupted run); or pause/resume one in the daemon',
      (y) =>
        y
          .positional('image', { type: 'string', describe: 'plaintext image (or one under conversion)' })
          .option('key-file', {
            type: 'string',
            describe: 'passphrase file (- for stdin); default: the platform key',
          })
          .option('kek', {
            type: 'string',
            describe: 'bind to this customer KEK (provider NAME) instead of the platform key',
          })
          .option('sector-size', { type: 'number', choices: [...SECTOR_SIZES], default: 4096 })
          .option('header', {
            type: 'string',
            describe: 'detached header file: ciphertext replaces plaintext in place',
          })
          .option('max-rate', {
            type: 'string',
            describe: 'throttle, bytes per second (e.g. 100M); default unlimited',
          })
          .option('iter-time', {
            type: 'number',
            describe: 'PBKDF2 benchmark target in ms for a --key-file keyslot',
          })
          .option('adopt-sidecar', {
            type: 'boolean',
            default: false,
            describe:
              "confirm that IMAGE's .atrest-convert.hdr is its own after a copy or restore, then resume",
          })
          .option('pause', { type: 'string', describe: 'pause the conversion of open volume NAME' })
          .option('resume', { type: 'string', describe: 'resume the conversion of open volume NAME' }),
      async (a) => {
        requireRoot();
        const control = a.pause ?? a.resume;
        if (control !== undefined) {
          const action = a.pause !== undefined ? 'pause' : 'resume';
          await request(paths, { op: 'convert', name: control, action });
          console.log(`${action === 'pause' ? 'paused' : 'resumed'} the conversion of ${control}`);
          return;
        }
        if (a.image === undefined) throw new AtrestError('USAGE', 'name the image to encrypt');
        if (a['adopt-sidecar']) await adoptSidecar(resolve(a.image));
        const maxRate = a['max-rate'] === undefined ? 0 : parseSize(a['max-rate']);
        const passphrase = a['key-file'] === undefined ? undefined : await loadKey(a['key-file']);
        const km = manager(a.kek);
        try {
          await encryptOffline(paths, km, {
            image: a.image,
            header: a.header,
            sectorSize: a['sector-size'] as 512 | 1024 | 2048 | 4096,
            ...(passphrase === undefined ? {} : { passphrase }),
            kek: a.kek,
            maxRate,
            iterTimeMs: a['iter-time'],
          });
        } finally {
          passphrase?.fill(0);
          km.close();
        }
      },
    )
    .command(
      'reencrypt <target>',
      'move all data of a volume (IMAGE, or open volume NAME) to a new volume key, in place and crash-safe',
      (y) =>
        y
          .positional('target', {
            type: 'string',
            demandOption: true,
            describe: 'image path, or the NAME of an open volume',
          })
          .option('key-file', {
            type: 'string',
            array: true,
            describe: 'passphrase of a passphrase/recovery key slot (repeatable); bound slots need none',
          })
          .option('header', { type: 'string', describe: 'detached header file' })
          .option('encrypt', {
            type: 'boolean',
            default: false,
            describe: 'encrypt a plaintext image in place (it is rewritten) and serve it meanwhile',
          })
          .option('max-rate', { type: 'string', describe: 'throttle, bytes per second (e.g. 100M)' })
          .option('iter-time', {
            type: 'number',
            describe: 'PBKDF2 benchmark target in ms for passphrase slots',
          }),
      async (a) => {
        requireRoot();
        const maxRate = a['max-rate'] === undefined ? undefined : parseSize(a['max-rate']);
        const keyFiles = a['key-file'] ?? [];
        const isName = !a.target.includes('/') && a.header === undefined;
        if (isName) {
          const open = ((await request(paths, { op: 'status' }).catch(() => [])) as VolumeStatus[]).some(
            (v) => v.name === a.target,
          );
          if (open) {
            // passphrases from standard input (--key-file -) and the new recovery passphrases cross
            // the socket as raw bytes, never JSON or strings, and are wiped here
            const stdinKeys: Buffer[] = [];
            let recovery: Buffer[] = [];
            try {
              for (const f of keyFiles) if (f === '-') stdinKeys.push(await loadKey('-'));
              const answer = await requestWithSecrets(
                paths,
                {
                  op: 'reencrypt',
                  name: a.target,
                  keyFiles: keyFiles.filter((f) => f !== '-').map((f) => resolve(f)),
                  ...(maxRate === undefined ? {} : { maxRate }),
                },
                stdinKeys,
              );
              recovery = answer.secrets;
              for (const rec of recovery) {
                console.error(
                  'new recovery key (the old one no longer works; shown once, store it somewhere safe):',
                );
                await writeSecretLine(rec);
              }
            } finally {
              for (const k of stdinKeys) k.fill(0);
              for (const rec of recovery) rec.fill(0);
            }
            console.log(
              `re-encrypting ${a.target} under a new volume key in the daemon; see atrest status ${a.target}`,
            );
            return;
          }
        }
        const files: Buffer[] = [];
        const km = manager();
        try {
          for (const f of keyFiles) files.push(await loadKey(f));
          await reencryptOffline(paths, km, {
            image: a.target,
            header: a.header,
            keyFiles: files,
            maxRate: maxRate ?? 0,
            iterTimeMs: a['iter-time'],
          });
        } finally {
          for (const f of files) f.fill(0);
          km.close();
        }
      },
    )
    .command(
      'config <action> [file]',
      'check the configuration file (atrest config check [FILE])',
      (y) =>
        y
          .positional('action', { type: 'string', choices: ['check'], demandOption: true })
          .positional('file', { type: 'string', describe: `default ${DEFAULT_CONFIG}` }),
      async (a) => {
        const file = resolve(a.file ?? envValue('ATREST_CONFIG') ?? DEFAULT_CONFIG);
        const cfg = await loadConfig(file);
        console.log(`${file}: ${cfg.volumes.length} volume(s), no problems`);
        const providers = await loadProviders(globals.providers);
        console.log(`${providers.path}: ${providers.providers.size} key provider(s), no problems`);
      },
    )
    .command('key', 'manage keys: rotate, use a customer key, revoke, recovery, list, remove', (y) =>
      keyCommands(y, { manager, loadKey }),
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
          })
          .option('config', {
            type: 'string',
            describe:
              'volumes to open at start and on SIGHUP (JSON; env ATREST_CONFIG), e.g. /etc/atrest/volumes.json',
          })
          .option('key-check-interval', {
            type: 'number',
            describe:
              'seconds between KEK checks (revocation, new versions); default 5, env ATREST_KEY_CHECK_INTERVAL',
          })
          .option('key-unreachable-grace', {
            type: 'number',
            describe:
              'seconds volumes stay open while their key server (kmip) cannot be reached, then they lock; default 600, env ATREST_KEY_UNREACHABLE_GRACE',
          })
          .option('fuse-backend', {
            type: 'string',
            describe:
              'kernel (default: atrest speaks the FUSE protocol itself) or libfuse (the optional fallback); env ATREST_FUSE_BACKEND, config fuseBackend',
          })
          .option('fuse-workers', {
            type: 'number',
            describe:
              'threads serving FUSE requests per volume, kernel backend: 1-64, default one per core (2 to 8); env ATREST_FUSE_WORKERS',
          }),
      async (a) => {
        requireRoot();
        if (a.stop) {
          await request(paths, { op: 'shutdown' });
          await waitForDaemonExit(paths, 60_000);
          return;
        }
        await requireFuse();
        const interval = keyCheckIntervalSeconds(a['key-check-interval']);
        const graceArg = a['key-unreachable-grace'];
        const keyUnreachableGraceMs =
          graceArg !== undefined
            ? parseUnreachableGrace(graceArg, '--key-unreachable-grace')
            : envValue('ATREST_KEY_UNREACHABLE_GRACE') !== undefined
              ? parseUnreachableGrace(
                  envValue('ATREST_KEY_UNREACHABLE_GRACE'),
                  'ATREST_KEY_UNREACHABLE_GRACE',
                )
              : undefined;
        const fips = globals.fips || envFlag('ATREST_FIPS');
        if (fips && !fipsActive()) requireFips();
        const config = a.config ?? envValue('ATREST_CONFIG');
        const fuse = fuseSettings({ backend: a['fuse-backend'], workers: a['fuse-workers'] }, process.env);
        if (fuse.backend !== undefined) requireFuseBackend(fuse.backend);
        const d = new Daemon({
          paths: { ...paths, providers: globals.providers },
          logLevel: a['log-level'],
          ...(config === undefined || config === '' ? {} : { config: resolve(config) }),
          keyCheckIntervalMs: Math.round(interval * 1000),
          ...(keyUnreachableGraceMs === undefined ? {} : { keyUnreachableGraceMs }),
          fips,
          fuse,
        });
        await d.start();
        exitCode = -1; // keep running
      },
    )
    .command(
      'man',
      false, // hidden: scripts/install renders atrest(8) with it
      (y) => y,
      async () => {
        const epoch = Number(process.env.SOURCE_DATE_EPOCH);
        const date = (Number.isFinite(epoch) && epoch > 0 ? new Date(epoch * 1000) : new Date())
          .toISOString()
          .slice(0, 10);
        process.stdout.write(await manPage(ENTRY, version(), date));
      },
    )
    .completion('completion', 'print the bash completion script (scripts/install installs it)', ((
      _current: string,
      _argv: unknown,
      defaultCompletions,
      done,
    ) => {
      // the words after the program name; the last one is being completed
      const words = argv.slice(argv.indexOf('--get-yargs-completions') + 2);
      void openVolumeNames(paths.runDir).then((names) => {
        defaultCompletions((_err, defaults) => {
          done(completions(words, names, defaults ?? []));
        });
      });
    }) satisfies FallbackCompletionFunction)
    .demandCommand(1, 'name a command')
    .strict()
    .epilog(`Exit codes:\n  ${String(0).padStart(3)}  success\n${EXIT_CODE_TABLE}`)
    .fail((msg, err) => {
      if (err) throw err;
      throw new AtrestError('USAGE', msg);
    })
    .help()
    .version(false) // `key revoke/restore --version N` is theirs; `atrest --version` is handled before parsing
    .wrap(Math.min(110, process.stdout.columns || Number(process.env.COLUMNS) || 100));
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    console.log(version());
    return 0;
  }
  const completing = argv.indexOf('--get-yargs-completions');
  if (completing >= 0) {
    // bash asks for completions: print them, and never an error (it would land on the user's screen)
    try {
      for (const c of await cli.getCompletion(argv.slice(completing + 1))) console.log(c);
    } catch {
      // nothing to offer: bash falls back to file names
    }
    return 0;
  }
  try {
    await cli.parseAsync();
  } catch (err) {
    // with --json, scripts also get the error as JSON on stdout: {"error": {"code", "message", "hint", "path"}}
    if (argv.includes('--json')) {
      const json = isAtrestError(err)
        ? err.toJSON()
        : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
      console.log(JSON.stringify({ error: json }, null, 2));
    }
    if (isAtrestError(err)) {
      console.error(`atrest: ${err.oneLine()}`);
    } else {
      console.error(`atrest: internal error: ${err instanceof Error ? err.message : String(err)}`);
      if (envSet('ATREST_DEBUG') !== undefined) console.error(err);
    }
    return exitCodeOf(err);
  }
  return exitCode;
}

const code = await main(hideBin(process.argv));
if (code >= 0) process.exitCode = code;
