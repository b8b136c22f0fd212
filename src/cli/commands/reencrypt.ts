// `atrest reencrypt IMAGE|NAME`: moves a volume to a new volume key, in the daemon when NAME is open, else in the foreground.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { request, requestWithSecrets } from '../../daemon/client.js';
import type { VolumeStatus } from '../../daemon/protocol.js';
import { defineCommand } from '../command.js';
import { reencryptOffline } from '../convert.js';
import { encryptOption, headerOption } from '../options.js';
import { requireRoot } from '../preconditions.js';
import { NEW_RECOVERY_KEY, reencryptingInDaemon } from '../render/messages.js';
import { writeSecretLine } from '../secret-output.js';
import { parseSize } from '../size.js';

export const reencryptCommand = defineCommand({
  command: 'reencrypt <target>',
  describe:
    'move all data of a volume (IMAGE, or open volume NAME) to a new volume key, in place and crash-safe',
  options: (y: Argv) =>
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
      .option('header', headerOption())
      .option('encrypt', encryptOption())
      .option('max-rate', { type: 'string', describe: 'throttle, bytes per second (e.g. 100M)' })
      .option('iter-time', {
        type: 'number',
        describe: 'PBKDF2 benchmark target in ms for passphrase slots',
      }),
  verify: (a) => {
    requireRoot();
    return { maxRate: a['max-rate'] === undefined ? undefined : parseSize(a['max-rate']) };
  },
  action: async (a, ctx, { maxRate }) => {
    const { paths } = ctx;
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
          for (const f of keyFiles) if (f === '-') stdinKeys.push(await ctx.loadKey('-'));
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
            console.error(NEW_RECOVERY_KEY);
            await writeSecretLine(rec);
          }
        } finally {
          for (const k of stdinKeys) k.fill(0);
          for (const rec of recovery) rec.fill(0);
        }
        console.log(reencryptingInDaemon(a.target));
        return;
      }
    }
    const files: Buffer[] = [];
    const km = ctx.manager();
    try {
      for (const f of keyFiles) files.push(await ctx.loadKey(f));
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
});
