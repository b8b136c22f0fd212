// Deleting a platform KEK version: only on explicit request, after checking every volume the store knows.
//
// Policy (decidePlatformDeletion): never the newest version; refused while any known volume that can be
// read has a platform token of this store on that version; when some known volume cannot be read (image
// moved, storage unmounted, unreadable header) its needs are unknown, so deletion waits for an explicit
// confirmation. Nothing in atrest deletes a version on its own (rotation and re-wrap keep old ones).
import { AtrestError, isAtrestError } from '../errors/index.js';
import { readLuks2, type Luks2Metadata } from '../luks2/index.js';
import { keyEvent, NO_AUDIT, type AuditSink } from './audit.js';
import type { KillPoint } from './durable-file.js';
import { bindings, TOKEN_PLATFORM } from './tokens.js';
import { PlatformKekProvider } from './platform.js';
import { knownVolumes, type KnownVolume } from './registry.js';

/** What the store knows about one recorded volume, as seen now. */
export interface VolumeUse {
  uuid: string;
  image: string;
  header: string;
  /** readable: its header was read here; unseen: missing, moved, or unreadable (see reason). */
  state: 'readable' | 'unseen';
  reason?: string;
  /** Platform KEK versions of this store its tokens use (readable volumes). */
  versions: number[];
  /** Readable and one of its tokens uses the version in question. */
  needs: boolean;
}

export type DeletionDecision = 'delete' | 'refuse' | 'confirm-unseen' | 'newest';

export interface DeletionPlan {
  keyStore: string;
  version: number;
  newest: number;
  volumes: VolumeUse[];
  decision: DeletionDecision;
}

/** The policy alone: what may happen to `version` given the versions present and the known volumes. */
export function decidePlatformDeletion(
  version: number,
  newest: number,
  volumes: readonly VolumeUse[],
): DeletionDecision {
  if (version >= newest) return 'newest';
  if (volumes.some((v) => v.state === 'readable' && v.versions.includes(version))) return 'refuse';
  if (volumes.some((v) => v.state === 'unseen')) return 'confirm-unseen';
  return 'delete';
}

function why(err: unknown): string {
  if (isAtrestError(err)) {
    if (err.code === 'FILE_NOT_FOUND') return 'file not found';
    if (err.code === 'NOT_LUKS2') return 'no LUKS2 header there';
    return `${err.code}: ${err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * Looks at one recorded volume: its header where it was recorded and in its image (an in-place
 * conversion moves it there). Readable only if some candidate has the volume's UUID and none failed
 * for another reason than not being there.
 */
async function inspect(k: KnownVolume, keyId: string, version: number): Promise<VolumeUse> {
  const base = { uuid: k.uuid, image: k.image, header: k.header };
  if (k.header === '')
    return { ...base, state: 'unseen', reason: 'its record is damaged', versions: [], needs: false };
  const found: Luks2Metadata[] = [];
  const problems: string[] = [];
  const candidates = k.header === k.image ? [k.header] : [k.header, k.image];
  const at = (file: string): string => (candidates.length > 1 ? `${file}: ` : '');
  for (const header of candidates) {
    try {
      const m = await readLuks2(header, { imagePath: k.image });
      if (m.uuid.toLowerCase() === k.uuid.toLowerCase()) found.push(m);
      else problems.push(`${at(header)}another volume (UUID ${m.uuid})`);
    } catch (err) {
      const r = why(err);
      if (isAtrestError(err) && (err.code === 'FILE_NOT_FOUND' || err.code === 'NOT_LUKS2'))
        problems.push(`${at(header)}${r}`);
      else return { ...base, state: 'unseen', reason: `${at(header)}${r}`, versions: [], needs: false };
    }
  }
  if (found.length === 0)
    return { ...base, state: 'unseen', reason: problems.join('; '), versions: [], needs: false };
  const versions = new Set<number>();
  for (const m of found) {
    try {
      for (const b of bindings(m))
        if (b.type === TOKEN_PLATFORM && b.keyId === keyId) versions.add(b.version);
    } catch (err) {
      return {
        ...base,
        state: 'unseen',
        reason: `${at(m.headerPath)}${why(err)}`,
        versions: [],
        needs: false,
      };
    }
  }
  const list = [...versions].sort((a, b) => a - b);
  return { ...base, state: 'readable', versions: list, needs: list.includes(version) };
}

/** What deleting `version` would do, with every known volume as seen now. Changes nothing. */
export async function planPlatformDeletion(
  store: PlatformKekProvider,
  version: number,
): Promise<DeletionPlan> {
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new AtrestError('USAGE', `bad platform KEK version ${String(version)}`, {
      hint: 'give a version number as shown by atrest key list IMAGE (1, 2, ...)',
    });
  }
  const present = await store.versions();
  if (!present.includes(version)) {
    throw new AtrestError('FILE_NOT_FOUND', `no platform KEK version ${version} in key store ${store.dir}`, {
      hint: `versions present: ${present.join(', ') || 'none'}`,
    });
  }
  const newest = present[present.length - 1] ?? version;
  const keyId = await store.keyId();
  const volumes: VolumeUse[] = [];
  for (const k of await knownVolumes(store.dir)) volumes.push(await inspect(k, keyId, version));
  return {
    keyStore: store.dir,
    version,
    newest,
    volumes,
    decision: decidePlatformDeletion(version, newest, volumes),
  };
}

function list(vs: readonly VolumeUse[]): string {
  return vs.map((v) => (v.reason === undefined ? v.image : `${v.image} (${v.reason})`)).join(', ');
}

/**
 * Deletes platform KEK version `version` if the policy allows it (`yesDeleteUnseen`: known volumes that
 * cannot be read do not stop it); throws a clear error otherwise. Audited. Returns the plan it acted on.
 */
export async function deletePlatformVersion(
  store: PlatformKekProvider,
  version: number,
  opts: { yesDeleteUnseen?: boolean; audit?: AuditSink; killPoint?: KillPoint } = {},
): Promise<DeletionPlan> {
  const plan = await planPlatformDeletion(store, version);
  const users = plan.volumes.filter((v) => v.needs);
  const unseen = plan.volumes.filter((v) => v.state === 'unseen');
  switch (plan.decision) {
    case 'newest':
      throw new AtrestError(
        'USAGE',
        `version ${version} is the newest platform KEK version and is never deleted`,
        {
          hint: 'rotate first (atrest key rotate-platform), re-wrap its volumes, then delete it',
        },
      );
    case 'refuse':
      throw new AtrestError(
        'KEY_IN_USE',
        `platform KEK version ${version} is still used by ${users.length} volume${users.length === 1 ? '' : 's'}: ${list(users)}`,
        {
          hint: 'move them to the newest version first (atrest key rotate IMAGE, or keep them open in the daemon)',
        },
      );
    case 'confirm-unseen':
      if (opts.yesDeleteUnseen !== true) {
        throw new AtrestError(
          'USAGE',
          `${unseen.length} known volume${unseen.length === 1 ? '' : 's'} using the platform key cannot be read, and may need version ${version}: ${list(unseen)}`,
          {
            hint: 'bring them back and re-wrap them (atrest key rotate IMAGE), or, if they are gone for good, pass --yes-delete-unseen',
          },
        );
      }
      break;
    case 'delete':
      break;
  }
  await store.deleteVersion(version, opts.killPoint === undefined ? {} : { killPoint: opts.killPoint });
  (opts.audit ?? NO_AUDIT)(
    keyEvent('delete-platform-version', {
      provider: 'platform:',
      keyId: await store.keyId(),
      kekVersion: version,
      reason:
        unseen.length > 0
          ? `confirmed past ${unseen.length} unseen volume(s): ${unseen.map((v) => v.uuid).join(', ')}`
          : undefined,
    }),
  );
  return plan;
}
