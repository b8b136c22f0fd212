// `atrest status [NAME|IMAGE]`: the open volumes (from the daemon), one of them, or the encryption settings of a closed image.
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { AtrestError, isAtrestError } from '../../errors/index.js';
import { bindings, keySourceOf, redactUri } from '../../keys/index.js';
import { readLuks2 } from '../../luks2/index.js';
import { request } from '../../daemon/client.js';
import type { EncryptionStatus, VolumeStatus } from '../../daemon/protocol.js';
import { defineCommand } from '../command.js';
import { jsonOption } from '../options.js';
import { printClosedImage, printVolumes } from '../render/status.js';

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

export const statusCommand = defineCommand({
  command: 'status [name]',
  describe: 'show open volumes, or one by NAME, or the encryption settings of an IMAGE file',
  options: (y: Argv) =>
    y
      .positional('name', { type: 'string', describe: 'volume name or image path' })
      .option('header', { type: 'string', describe: 'detached header file (with an IMAGE)' })
      .option('json', jsonOption()),
  action: async (a, ctx) => {
    const asImage = a.name !== undefined && (a.name.includes('/') || a.header !== undefined);
    let list: VolumeStatus[];
    try {
      if (typeof process.getuid === 'function' && process.getuid() !== 0) {
        throw new AtrestError('DAEMON_UNAVAILABLE', 'not root: cannot ask the daemon');
      }
      list = (await request(
        ctx.paths,
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
        printClosedImage(image, encryption, a.json);
        return;
      }
    }
    printVolumes(list, a.json);
  },
});
