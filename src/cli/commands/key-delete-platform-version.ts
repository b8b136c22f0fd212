// `atrest key delete-platform-version VERSION [--dry-run] [--yes-delete-unseen] [--json]`: the only way a platform KEK version goes.
import type { Argv, CommandModule } from 'yargs';
import { PlatformKekProvider } from '../../keys/index.js';
import { deletePlatformVersion, planPlatformDeletion } from '../../keys/platform-delete.js';
import type { KeyCommandContext } from '../context.js';
import { jsonOption } from '../options.js';
import { printJson } from '../render/json.js';
import { formatPlan } from '../render/keys.js';

interface Args {
  version: number;
  'dry-run': boolean;
  'yes-delete-unseen': boolean;
  json: boolean;
}

export function deletePlatformVersionCommand(ctx: KeyCommandContext): CommandModule<object, Args> {
  return {
    command: 'delete-platform-version <version>',
    describe:
      'delete an old platform KEK version, after listing the known volumes that use it (refuses while one needs it)',
    builder: (a: Argv) =>
      a
        .positional('version', { type: 'number', demandOption: true, describe: 'the version to delete' })
        .option('dry-run', {
          type: 'boolean',
          default: false,
          describe: 'only list what uses it; change nothing',
        })
        .option('yes-delete-unseen', {
          type: 'boolean',
          default: false,
          describe: 'delete even though some known volumes cannot be read (they may need it)',
        })
        .option('json', jsonOption()),
    handler: async (a) => {
      const km = ctx.manager();
      try {
        const dir = km.keyStoreDir;
        const store = new PlatformKekProvider(dir === undefined ? {} : { keyStoreDir: dir });
        const plan = await planPlatformDeletion(store, a.version);
        if (a['dry-run']) {
          if (a.json) printJson(plan);
          else console.log(formatPlan(plan));
          return;
        }
        if (!a.json) console.log(formatPlan(plan));
        const done = await deletePlatformVersion(store, a.version, {
          yesDeleteUnseen: a['yes-delete-unseen'],
          audit: (e) => km.auditEvent(e),
        });
        if (a.json) printJson({ ...done, deleted: true });
        else console.log(`deleted platform KEK version ${a.version}`);
      } finally {
        km.close();
      }
    },
  };
}
