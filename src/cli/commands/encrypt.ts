// `atrest encrypt IMAGE`: encrypts a plaintext image in place in the foreground; `--pause/--resume NAME` steers one in the daemon.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { AtrestError } from '../../errors/index.js';
import { adoptSidecar } from '../../volume/index.js';
import { request } from '../../daemon/client.js';
import { defineCommand } from '../command.js';
import { encryptOffline } from '../convert.js';
import { sectorSizeOption, type SectorSize } from '../options.js';
import { requireRoot } from '../preconditions.js';
import { conversionControlled } from '../render/messages.js';
import { parseSize } from '../size.js';

export const encryptCommand = defineCommand({
  command: 'encrypt [image]',
  describe:
    'encrypt a plaintext image in place (resumes an interrupted run); or pause/resume one in the daemon',
  options: (y: Argv) =>
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
      .option('sector-size', sectorSizeOption())
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
        describe: "confirm that IMAGE's .atrest-convert.hdr is its own after a copy or restore, then resume",
      })
      .option('pause', { type: 'string', describe: 'pause the conversion of open volume NAME' })
      .option('resume', { type: 'string', describe: 'resume the conversion of open volume NAME' }),
  verify: (a) => {
    requireRoot();
    if (a.pause === undefined && a.resume === undefined && a.image === undefined)
      throw new AtrestError('USAGE', 'name the image to encrypt');
  },
  action: async (a, ctx) => {
    const control = a.pause ?? a.resume;
    if (control !== undefined) {
      const action = a.pause !== undefined ? 'pause' : 'resume';
      await request(ctx.paths, { op: 'convert', name: control, action });
      console.log(conversionControlled(action, control));
      return;
    }
    const image = a.image ?? ''; // verify made sure there is one
    if (a['adopt-sidecar']) await adoptSidecar(resolve(image));
    const maxRate = a['max-rate'] === undefined ? 0 : parseSize(a['max-rate']);
    const passphrase = a['key-file'] === undefined ? undefined : await ctx.loadKey(a['key-file']);
    const km = ctx.manager(a.kek);
    try {
      await encryptOffline(ctx.paths, km, {
        image,
        header: a.header,
        sectorSize: a['sector-size'] as SectorSize,
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
});
