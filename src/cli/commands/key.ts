// `atrest key ...`: rotate, rotate-platform, use, revoke, restore, add-recovery, list, remove, delete-platform-version.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { AtrestError } from '../../errors/index.js';
import {
  bindings,
  FileKekProvider,
  keyEvent,
  listKeyslots,
  PROVIDER_NAME_RE,
  redactUri,
  schemeOf,
  type UnlockOptions,
} from '../../keys/index.js';
import { readLuks2, type Luks2Metadata } from '../../luks2/index.js';
import { defineCommand } from '../command.js';
import type { KeyCommandContext } from '../context.js';
import { kmipRevocation, prepareKmipKey } from '../kmip-keys.js';
import { headerOption, jsonOption, volumeKekOption } from '../options.js';
import { printJson } from '../render/json.js';
import { KEY_SLOT_HEADING, slotRow } from '../render/keys.js';
import { writeSecretLine } from '../secret-output.js';
import { deletePlatformVersionCommand } from './key-delete-platform-version.js';

interface ImageArgs {
  image: string;
  header?: string | undefined;
}

async function readImage(a: ImageArgs): Promise<Luks2Metadata> {
  const image = resolve(a.image);
  return readLuks2(a.header === undefined ? image : resolve(a.header), { imagePath: image });
}

/** Unlock options from --key-file (absent: through the volume's platform/customer key token). */
async function auth(ctx: KeyCommandContext, keyFile: string | undefined): Promise<UnlockOptions> {
  return keyFile === undefined ? {} : { passphrase: await ctx.loadKey(keyFile) };
}

function wipe(u: UnlockOptions): void {
  if (u.passphrase instanceof Buffer) u.passphrase.fill(0);
}

function kekUri(uri: string): string {
  if (schemeOf(uri) === '' && !PROVIDER_NAME_RE.test(uri)) {
    throw new AtrestError(
      'USAGE',
      `--kek needs a provider NAME or platform:, got ${JSON.stringify(redactUri(uri))}`,
      {
        hint: 'use platform:, or the NAME of a provider configured in providers.json',
      },
    );
  }
  return uri;
}

/**
 * Writes or removes the revocation marker (all versions, or one) of a configured file provider and
 * audits it. Returns what was revoked, as tokens name it (`ref:NAME`).
 */
async function fileRevocation(
  ctx: KeyCommandContext,
  action: 'revoke' | 'restore',
  kek: string,
  version: number | undefined,
): Promise<string> {
  const km = ctx.manager();
  try {
    const kmip = await kmipRevocation(km, action, kek, version);
    if (kmip !== null) return kmip;
    const r = await km.resolve(kek, 'cli');
    if (schemeOf(r.uri) !== 'file') {
      throw new AtrestError('USAGE', `key ${action} works on file providers; ${r.stored} is not one`, {
        hint:
          schemeOf(r.uri) === 'pkcs11'
            ? 'revoke a PKCS#11 key in the HSM (destroy it or clear CKA_DECRYPT/CKA_UNWRAP)'
            : 'platform keys are rotated, not revoked',
      });
    }
    const opts = version === undefined ? {} : { version };
    const fp = new FileKekProvider();
    if (action === 'revoke') await fp.revoke(r.uri, opts);
    else await fp.restore(r.uri, opts);
    km.auditEvent(keyEvent(action, { provider: r.stored, kekVersion: version }));
    return r.stored;
  } finally {
    km.close();
  }
}

/** Registers `atrest key <command>`. */
export function keyCommands(y: Argv, ctx: KeyCommandContext): Argv {
  const image = (a: Argv): Argv<ImageArgs> =>
    a
      .positional('image', { type: 'string', demandOption: true, describe: 'LUKS2 image' })
      .option('header', headerOption());
  return y
    .command(
      'rotate <image>',
      "re-wrap the image's key tokens under the newest KEK version (no data is re-encrypted)",
      (a) => image(a).option('kek', volumeKekOption()),
      async (a) => {
        const km = ctx.manager(a.kek);
        try {
          const meta = await readImage(a);
          const list = bindings(meta);
          if (list.length === 0) {
            throw new AtrestError('USAGE', `${a.image} has no platform or customer key token to rotate`, {
              hint: 'bind it first: atrest key use IMAGE --kek URI',
            });
          }
          for (const b of list) {
            const r = await km.rewrap(meta, b);
            const what = `key slot ${b.keyslot} (${redactUri(b.kek)})`;
            console.log(
              r
                ? `${what}: version ${r.from} -> ${r.to}${r.kek === b.kek ? '' : `, now named ${r.kek}`}`
                : `${what}: already on the newest version ${b.version}`,
            );
          }
        } finally {
          km.close();
        }
      },
    )
    .command(
      'rotate-platform',
      'make a new platform KEK version (volumes pick it up on `key rotate` or automatically while open)',
      (a) => a,
      async () => {
        const km = ctx.manager();
        try {
          const ref = await km.rotatePlatform();
          console.log(`platform KEK version ${ref.version} created (older versions are kept)`);
        } finally {
          km.close();
        }
      },
    )
    .command(
      'use <image>',
      'bind the image to a KEK (customer key, or platform:), then remove its previous KEK keyslot',
      (a) =>
        image(a)
          .option('kek', {
            type: 'string',
            demandOption: true,
            describe: 'a provider NAME from providers.json, or platform:',
          })
          .option('key-file', {
            type: 'string',
            describe: 'unlock with this passphrase file instead of the current KEK',
          }),
      async (a) => {
        const uri = kekUri(a.kek);
        const km = ctx.manager(uri);
        const u = await auth(ctx, a['key-file']);
        try {
          const meta = await readImage(a);
          const kmip = await prepareKmipKey(km, uri);
          if (kmip !== null) console.log(kmip);
          const r = await km.useKek(meta, uri, u);
          console.log(
            `key slot ${r.keyslot} now bound to ${r.ref.uri} (version ${r.ref.version})` +
              (r.removed.length > 0 ? `; removed key slot ${r.removed.join(', ')}` : ''),
          );
        } finally {
          wipe(u);
          km.close();
        }
      },
    )
    .command(
      'revoke',
      'revoke a file: or kmip: KEK (every version, or one): volumes using it lock and stop opening',
      (a) =>
        a
          .option('kek', {
            type: 'string',
            demandOption: true,
            describe: 'file or kmip provider NAME (kmip:NAME revokes the key on the KMIP server)',
          })
          .option('version', { type: 'number', describe: 'only this version' }),
      async (a) => {
        const uri = kekUri(a.kek);
        if (schemeOf(uri) === 'pkcs11' || schemeOf(uri) === 'platform') {
          throw new AtrestError('USAGE', `key revoke works on file providers, not ${schemeOf(uri)}:`, {
            hint:
              schemeOf(uri) === 'pkcs11'
                ? 'revoke a PKCS#11 key in the HSM (destroy it or clear CKA_DECRYPT/CKA_UNWRAP)'
                : 'platform keys are rotated, not revoked',
          });
        }
        const what = await fileRevocation(ctx, 'revoke', uri, a.version);
        console.log(`revoked ${what}${a.version === undefined ? '' : ` version ${a.version}`}`);
      },
    )
    .command(
      'restore',
      'undo `key revoke` for a file: KEK',
      (a) =>
        a
          .option('kek', { type: 'string', demandOption: true, describe: 'file provider NAME' })
          .option('version', { type: 'number', describe: 'only this version' }),
      async (a) => {
        const uri = kekUri(a.kek);
        if (schemeOf(uri) === 'pkcs11' || schemeOf(uri) === 'platform')
          throw new AtrestError('USAGE', 'key restore works on file providers');
        const what = await fileRevocation(ctx, 'restore', uri, a.version);
        console.log(`restored ${what}`);
      },
    )
    .command(
      'add-recovery <image>',
      'add a recovery passphrase key slot; the passphrase is printed once',
      (a) =>
        image(a)
          .option('key-file', {
            type: 'string',
            describe: 'unlock with this passphrase file instead of the KEK',
          })
          .option('kek', volumeKekOption())
          .option('iter-time', { type: 'number', describe: 'PBKDF2 benchmark target in ms (default 2000)' }),
      async (a) => {
        const km = ctx.manager(a.kek);
        const u = await auth(ctx, a['key-file']);
        try {
          const meta = await readImage(a);
          const r = await km.addRecovery(
            meta,
            u,
            a['iter-time'] === undefined ? undefined : { type: 'pbkdf2', iterTimeMs: a['iter-time'] },
          );
          try {
            console.error(`recovery key for key slot ${r.keyslot} (shown once; store it somewhere safe):`);
            await writeSecretLine(r.passphrase);
          } finally {
            r.passphrase.fill(0);
          }
        } finally {
          wipe(u);
          km.close();
        }
      },
    )
    .command(
      'list <image>',
      'list key slots: kind (platform, customer, recovery, passphrase), token, KEK, version',
      (a) => image(a).option('json', jsonOption()),
      async (a) => {
        const meta = await readImage(a);
        const list = listKeyslots(meta);
        if (a.json) {
          printJson({ image: meta.imagePath, uuid: meta.uuid, keyslots: list });
          return;
        }
        console.log(`${meta.imagePath}: ${list.length} key slot${list.length === 1 ? '' : 's'}`);
        console.log(KEY_SLOT_HEADING);
        for (const e of list) console.log(slotRow(e));
      },
    )
    .command(
      'remove <image> <slot>',
      'remove a key slot (refuses the last one that can unlock the volume)',
      (a) => image(a).positional('slot', { type: 'number', demandOption: true }),
      async (a) => {
        const slot = a.slot;
        if (!Number.isSafeInteger(slot) || slot < 0)
          throw new AtrestError('USAGE', `bad key slot ${String(a.slot)}`);
        const km = ctx.manager();
        const meta = await readImage(a);
        await km.removeSlot(meta, slot);
        console.log(`removed key slot ${slot}`);
      },
    )
    .command(deletePlatformVersionCommand(ctx))
    .demandCommand(1, 'name a key command');
}

export const keyCommand = defineCommand({
  command: 'key',
  describe: 'manage keys: rotate, use a customer key, revoke, recovery, list, remove',
  options: (y: Argv, ctx) => keyCommands(y, ctx),
});
