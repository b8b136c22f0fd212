// `atrest format IMAGE --size N`: creates a LUKS2 volume locally, bound to the platform key, a customer KEK or a passphrase.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { AtrestError } from '../../errors/index.js';
import { redactUri } from '../../keys/index.js';
import { formatLuks2 } from '../../luks2/index.js';
import { defineCommand } from '../command.js';
import { sectorSizeOption, type SectorSize } from '../options.js';
import { formattedWithKek, formattedWithPassphrase } from '../render/messages.js';
import { parseSize } from '../size.js';

export const formatCommand = defineCommand({
  command: 'format <image>',
  describe: 'create a new LUKS2 volume (aes-xts-plain64)',
  options: (y: Argv) =>
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
      .option('sector-size', sectorSizeOption())
      .option('header', { type: 'string', describe: 'detached header file (data then starts at 0)' })
      .option('label', { type: 'string', describe: 'LUKS2 label' })
      .option('iter-time', { type: 'number', describe: 'PBKDF2 benchmark target in ms (default 1000)' })
      .option('pbkdf-force-iterations', { type: 'number', describe: 'fixed PBKDF2 iteration count' }),
  verify: (a) => {
    const size = parseSize(a.size);
    const sectorSize = a['sector-size'] as SectorSize;
    if (size % sectorSize !== 0) {
      throw new AtrestError('USAGE', `size ${size} is not a multiple of the sector size ${sectorSize}`, {
        hint: `use a multiple of ${sectorSize} bytes`,
      });
    }
    if (a['key-file'] === undefined) {
      if (a['iter-time'] !== undefined || a['pbkdf-force-iterations'] !== undefined) {
        throw new AtrestError('USAGE', '--iter-time and --pbkdf-force-iterations need --key-file', {
          hint: 'key slots bound to a KEK hold a 256-bit random secret and need no stretching',
        });
      }
    } else if (a.kek !== undefined) {
      throw new AtrestError('USAGE', 'give either --key-file or --kek, not both', {
        hint: 'format with --kek, then add a passphrase with `atrest key add-recovery`',
      });
    }
    return { size, sectorSize };
  },
  action: async (a, ctx, { size, sectorSize }) => {
    const keyFile = a['key-file'];
    if (keyFile === undefined) {
      const km = ctx.manager(a.kek);
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
        console.log(formattedWithKek(a.image, size, r.uuid, who, r.ref.version));
      } finally {
        km.close();
      }
      return;
    }
    const passphrase = await ctx.loadKey(keyFile);
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
      console.log(formattedWithPassphrase(a.image, size, r.uuid));
    } finally {
      passphrase.fill(0);
    }
  },
});
