// How key commands' results look: the `key list` table and the plan of `key delete-platform-version`.
import type { KeyslotEntry } from '../../keys/index.js';
import type { DeletionPlan } from '../../keys/platform-delete.js';

/** The heading of the `key list` table. */
export const KEY_SLOT_HEADING = 'slot  kind        token      kdf       KEK';

/** One row of the `key list` table. */
export function slotRow(e: KeyslotEntry): string {
  const parts = [`${String(e.slot).padStart(4)}  ${e.kind.padEnd(10)}`];
  parts.push(`token ${e.token === null ? '-' : String(e.token)}`.padEnd(9));
  parts.push(e.kdf.padEnd(8));
  if (e.kek !== undefined) parts.push(`${e.kek} (key ${e.keyId ?? '?'}, version ${e.kekVersion ?? '?'})`);
  if (!e.usable) parts.push('[not usable here]');
  return parts.join('  ').trimEnd();
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
