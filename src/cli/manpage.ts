// The atrest(8) manual page, rendered from the CLI's own --help texts and the error table, so the two never drift.
import { ERROR_CODES } from '../errors/index.js';

/** One command's help as the CLI prints it (`atrest CMD --help`). */
export interface CommandHelp {
  /** The command words, e.g. `open` or `key rotate`. */
  name: string;
  help: string;
}

export interface ManPageInput {
  version: string;
  /** `atrest --help`. */
  top: string;
  commands: CommandHelp[];
  /** Date of the page, YYYY-MM-DD. */
  date: string;
}

/** What each exit code means; every exit code of the error table must have a line here (a test checks). */
export const EXIT_MEANINGS: Record<number, string> = {
  2: 'bad arguments or request',
  3: 'environment: not root, no /dev/fuse, a program missing, --fips without a FIPS provider',
  4: 'files: not found, exists, I/O error, read-only, no space',
  5: "the image's format: not LUKS2, damaged header, truncated image, unsupported feature, conversion state",
  6: 'keys: wrong key, weak key, key unavailable or revoked',
  7: 'already open or in use',
  8: 'no such open volume, or the volume is locked',
  9: 'the daemon is not running or not reachable',
  10: 'an operation took too long',
  70: 'a bug: please report it with the daemon log',
};

/**
 * The environment variables atrest reads, and what for. A test checks every ATREST_* variable read in
 * src/ is either here or in INTERNAL_ENV.
 */
export const ENVIRONMENT: Array<[string, string]> = [
  ['ATREST_RUN_DIR', 'directory of the plaintext disk files (default /run/atrest)'],
  ['ATREST_STATE_DIR', "the daemon's control socket, pid file, locks and log (default /run/atrestd)"],
  [
    'ATREST_KEY_STORE',
    'platform key store directory (default /var/lib/atrest/keys); --key-store overrides it',
  ],
  ['ATREST_AUDIT_LOG', 'audit log of key events, JSON lines (default /var/log/atrest/audit.log)'],
  [
    'ATREST_PROVIDERS',
    'customer key providers (default /etc/atrest/providers.json); --providers overrides it',
  ],
  [
    'ATREST_CONFIG',
    'configuration file of the daemon (default /etc/atrest/volumes.json); --config overrides it',
  ],
  ['ATREST_KEY_CHECK_INTERVAL', 'seconds between KEK checks of the daemon (default 5)'],
  [
    'ATREST_KEY_UNREACHABLE_GRACE',
    'seconds volumes stay open while their key server (kmip) cannot be reached, then they lock (default 600); --key-unreachable-grace overrides it',
  ],
  [
    'ATREST_KDF_MAX_MEMORY',
    'the most memory one key derivation (Argon2) may use, KiB or 512M/2G (default 1 GiB)',
  ],
  [
    'ATREST_KDF_MAX_SECONDS',
    'the most seconds one key derivation may run before it fails with KDF_BUDGET (default 60)',
  ],
  ['ATREST_FIPS', '1: the daemon behaves as with --fips'],
  ['ATREST_CRYPTO_WORKERS', 'crypto worker threads (default: one per core)'],
  [
    'ATREST_CRYPTO_INLINE_MAX',
    'runs up to this many bytes are encrypted on the calling thread (default 16384)',
  ],
  [
    'ATREST_HOST_MNT_NS',
    "the host's mount namespace, where mounts are made when the daemon runs in its own (default /proc/1/ns/mnt)",
  ],
  [
    'ATREST_FUSE_BACKEND',
    "the daemon's FUSE backend: kernel (default) or libfuse (the optional fallback); --fuse-backend overrides it, it overrides the configuration file's fuseBackend",
  ],
  [
    'ATREST_FUSE_WORKERS',
    'threads serving FUSE requests per volume with the kernel backend, 1 to 64 (default one per core, 2 to 8); --fuse-workers overrides it',
  ],
  ['ATREST_DEBUG', 'set: internal errors also print their stack'],
];

/** Variables read in src/ that are for tests and benchmarks only, never for users. */
export const INTERNAL_ENV = [
  'ATREST_TEST_KILL_AT',
  'ATREST_BENCH_PLAIN',
  // the highest FUSE protocol minor the kernel backend accepts (tests of older kernels), 31 to 255
  'ATREST_FUSE_MAX_MINOR',
];

const FILES: Array<[string, string]> = [
  ['/run/atrest/NAME', 'the plaintext disk file of open volume NAME (root only)'],
  ['/run/atrestd/control.sock', "the daemon's control socket (newline-delimited JSON, root only)"],
  ['/run/atrestd/daemon.log', "the daemon's log when open started it"],
  ['/etc/atrest/volumes.json', 'volumes the daemon opens at start and on SIGHUP (atrest config check)'],
  [
    '/etc/atrest/providers.json',
    'customer key providers by name: PKCS#11 modules, PIN files, key files (root only)',
  ],
  ['/var/lib/atrest/keys', 'the platform key store (0700, files 0600)'],
  ['/var/log/atrest/audit.log', 'audit log of key events, no secrets'],
  ['/etc/systemd/system/atrest.service', 'the systemd unit (scripts/install)'],
];

const EXAMPLES: Array<[string, string]> = [
  [
    'A new 10 GiB volume bound to the platform key, opened with a loop device',
    'atrest format /srv/vm.img --size 10G\natrest open /srv/vm.img vm --loop',
  ],
  ['What is open, and how each volume is keyed', 'atrest status\natrest status vm --json'],
  ['Encrypt an existing plaintext image in place', 'atrest encrypt /srv/old.img'],
  [
    'A recovery key (printed once), then rotate the platform KEK',
    'atrest key add-recovery /srv/vm.img\natrest key rotate-platform\natrest key rotate /srv/vm.img',
  ],
  ['Flush, detach the loop device and stop serving', 'atrest close vm'],
];

/** Escapes text for troff: backslashes, and a leading dot or quote that would read as a request. */
export function troffEscape(text: string): string {
  return text
    .split('\n')
    .map((l) => l.replace(/\\/g, '\\e').replace(/-/g, '\\-'))
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function verbatim(text: string): string {
  return ['.PP', '.nf', '.RS 4', troffEscape(text.replace(/\s+$/, '')), '.RE', '.fi'].join('\n');
}

function tagged(tag: string, body: string, bold = true): string {
  return ['.TP', bold ? `.B ${troffEscape(tag)}` : troffEscape(tag), troffEscape(body)].join('\n');
}

/** A help text in parts: the usage line, the description, and the rest (positionals, options). */
export function helpParts(help: string): { usage: string; description: string; rest: string } {
  const blocks = help
    .replace(/\s+$/, '')
    .split(/\n\s*\n/)
    .map((b) => b.replace(/\s+$/, ''));
  const usage = (blocks.shift() ?? '').trim();
  const heading = /^[A-Z][a-z ]*:$/;
  const description =
    blocks[0] !== undefined && !heading.test(blocks[0].split('\n')[0]?.trim() ?? '')
      ? (blocks.shift() ?? '')
      : '';
  return { usage, description: description.replace(/\s+/g, ' ').trim(), rest: blocks.join('\n\n') };
}

/** The "Options:" block of a help text. */
function optionsBlock(help: string): string {
  return (
    helpParts(help)
      .rest.split(/\n\s*\n/)
      .find((b) => b.startsWith('Options:')) ?? ''
  );
}

/** The page, in troff -man. */
export function renderManPage(input: ManPageInput): string {
  const out: string[] = [];
  out.push(`.\\" atrest(8): generated by \`atrest man\` from the CLI's own help; do not edit.`);
  out.push(`.TH ATREST 8 "${input.date}" "atrest ${input.version}" "System Administration"`);
  out.push(
    '.SH NAME',
    'atrest \\- encryption at rest for Linux disk images (LUKS2 volumes served through FUSE)',
  );
  out.push('.SH SYNOPSIS');
  for (const c of input.commands) out.push('.br', `.B ${troffEscape(helpParts(c.help).usage)}`);
  out.push(
    '.SH DESCRIPTION',
    troffEscape(
      'atrest keeps disk images encrypted at rest. An image is a standard LUKS2 volume (aes-xts-plain64): ' +
        'every byte that reaches it is ciphertext, while users read and write plaintext through a regular ' +
        'file served over FUSE at /run/atrest/NAME. Put a loop device and a filesystem on that file, or hand ' +
        "it to a VM as a raw disk. cryptsetup opens atrest's images, and atrest opens cryptsetup's.",
    ),
    '.PP',
    troffEscape(
      "Volume keys live only in LUKS2 keyslots. By default a keyslot is bound to the host's platform key " +
        '(a key-encryption key in /var/lib/atrest/keys); customer keys (a key file or a PKCS#11 token) can ' +
        'be used instead, and revoking one locks every volume bound to it within seconds. The daemon ' +
        '(atrest daemon, usually the atrest.service unit) serves the open volumes; the other commands talk ' +
        'to it over a root-only socket and start it when needed.',
    ),
  );
  out.push('.SH OPTIONS', troffEscape('Options every command takes:'), verbatim(optionsBlock(input.top)));
  out.push('.SH COMMANDS');
  for (const c of input.commands) {
    const { usage, description, rest } = helpParts(c.help);
    out.push(`.SS ${troffEscape(usage)}`, troffEscape(description));
    if (rest !== '') out.push(verbatim(rest));
  }
  out.push('.SH EXIT STATUS', tagged('0', 'success'));
  const byExit = new Map<number, string[]>();
  for (const [code, { exit }] of Object.entries(ERROR_CODES)) {
    byExit.set(exit, [...(byExit.get(exit) ?? []), code]);
  }
  for (const [exit, codes] of [...byExit].sort((a, b) => a[0] - b[0])) {
    out.push(tagged(String(exit), `${EXIT_MEANINGS[exit] ?? ''} (${codes.join(', ')})`));
  }
  out.push(
    '.PP',
    troffEscape(
      'Every error is one line, "atrest: what is wrong; what to do", never a stack trace. The same codes travel ' +
        'over the control socket as {"code", "message", "hint"} and become errno values in FUSE.',
    ),
  );
  out.push('.SH ENVIRONMENT');
  for (const [name, what] of ENVIRONMENT) out.push(tagged(name, what));
  out.push('.SH FILES');
  for (const [name, what] of FILES) out.push(tagged(name, what));
  out.push('.SH EXAMPLES');
  for (const [what, cmds] of EXAMPLES) out.push('.PP', troffEscape(what + ':'), verbatim(cmds));
  out.push('.SH SEE ALSO', '.BR cryptsetup (8),', '.BR losetup (8),', '.BR systemctl (1)');
  return out.join('\n') + '\n';
}
