// `atrest key delete-platform-version VERSION [--dry-run] [--yes-delete-unseen] [--json]`: the only way a platform KEK version goes.
import type { Argv, CommandModule } from 'yargs';
import { PlatformKekProvider } from '../keys/index.js';
import { deletePlatformVersion, planPlatformDeletion, type DeletionPlan } from '../keys/platform-delete.js';
import type { KeyCommandContext } from './key-context.js';

interface Args {
  version: number;
  'dry-run': boolean;
  'yes-delete-unseen': boolean;
  json: boolean;
}

const VERDICT: Record<DeletionPlan['decision'], string> = {
  delete: 'no known volume needs it: it can be deleted',
  refuse: 'refused: a volume still needs it',
  'confirm-unseen': 'some known volumes cannot be read: deleting needs --yes-delete-unseen',
  newest: 'refused: the newest version is never deleted',
};

/** The plan as text: every known volume, whether it was read, the versions its tokens use. */
export function formatPlan(p: DeletionPlan): string {
  const lines = [`platform KEK version ${p.version} in key store ${p.keyStore} (newest: ${p.newest})`];
  lines.push(`known volumes bound to the platform key: ${p.volumes.length}`);
  for (const v of p.volumes) {
    const where = v.header === v.image ? v.image : `${v.image} (header ${v.header})`;
    const state =
      v.state === 'readable'
        ? v.versions.length === 0
          ? 'readable, no platform token of this store'
          : `readable, uses version ${v.versions.join(', ')}${v.needs ? '  <- needs it' : ''}`
        : `cannot be read (${v.reason ?? 'unknown'}): may need it`;
    lines.push(`  ${v.uuid}  ${where}  ${state}`);
  }
  lines.push(VERDICT[p.decision]);
  return lines.join('\n');
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
        .option('json', { type: 'boolean', default: false }),
    handler: async (a) => {
      const km = ctx.manager();
      try {
        const dir = km.keyStoreDir;
        const store = new PlatformKekProvider(dir === undefined ? {} : { keyStoreDir: dir });
        const plan = await planPlatformDeletion(store, a.version);
        if (a['dry-run']) {
          console.log(a.json ? JSON.stringify(plan, null, 2) : formatPlan(plan));
          return;
        }
        if (!a.json) console.log(formatPlan(plan));
        const done = await deletePlatformVersion(store, a.version, {
          yesDeleteUnseen: a['yes-delete-unseen'],
          audit: (e) => km.auditEvent(e),
        });
        if (a.json) console.log(JSON.stringify({ ...done, deleted: true }, null, 2));
        else console.log(`deleted platform KEK version ${a.version}`);
      } finally {
        km.close();
      }
    },
  };
}
