// `atrest open IMAGE NAME`: asks the daemon (started if needed) to serve the decrypted volume as /run/atrest/NAME.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { AtrestError } from '../../errors/index.js';
import { ensureDaemon, requestWithSecrets } from '../../daemon/client.js';
import type { VolumeStatus } from '../../daemon/protocol.js';
import { fuseSettings, requireFuseBackend } from '../../fuse/backend.js';
import { defineCommand } from '../command.js';
import { encryptOption } from '../options.js';
import { requireFuse, requireRoot } from '../preconditions.js';
import { printOpened } from '../render/messages.js';
import { ENTRY } from '../self.js';
import { parseSize } from '../size.js';

export const openCommand = defineCommand({
  command: 'open <image> <name>',
  describe: 'serve the decrypted volume as /run/atrest/NAME',
  options: (y: Argv) =>
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
      .option('encrypt', encryptOption())
      .option('max-rate', {
        type: 'string',
        describe:
          'cap (bytes per second) of an in-place conversion this open starts or resumes; default none: it yields to foreground I/O adaptively',
      })
      .option('bench-plain', { type: 'boolean', default: false, hidden: true })
      .option('read-only', { type: 'boolean', default: false })
      .option('loop', { type: 'boolean', default: false, describe: 'also attach a loop device' }),
  verify: async (a) => {
    requireRoot();
    await requireFuse();
    const maxRate = a['max-rate'] === undefined ? undefined : parseSize(a['max-rate']);
    if (a.encrypt && a.header !== undefined) {
      throw new AtrestError('USAGE', '--encrypt makes an attached header; it does not go with --header', {
        hint: 'to encrypt with a detached header: atrest encrypt IMAGE --header FILE, then atrest open IMAGE NAME --header FILE',
      });
    }
    return { maxRate };
  },
  action: async (a, ctx, { maxRate }) => {
    const { paths, globals } = ctx;
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
    if (globals.fips) keyArgs.fips = true;
    let stdinKey: Buffer | null = null;
    if (a['bench-plain']) {
      keyArgs.benchPlain = true;
    } else if (keyFile === undefined) {
      // unlocked through the volume's atrest-platform / atrest-cmk token by the daemon
    } else if (keyFile === '-') {
      // crosses the socket as raw bytes after the request (never JSON, never a string); wiped below
      stdinKey = await ctx.loadKey('-');
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
    printOpened(v.diskPath, v.loopDevice);
  },
});
