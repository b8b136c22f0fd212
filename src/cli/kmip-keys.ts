// `atrest key use/revoke` for kmip: providers: create (or find) and activate the key on the server; revoke it there.
import { AtrestError } from '../errors/index.js';
import { keyEvent, KmipKekProvider, type KeyManager } from '../keys/index.js';

/**
 * Before `key use --kek kmip:NAME` (or a NAME configured as kmip): makes sure the server has an active
 * AES-256 key for the provider, creating and activating version 1 when it has none. Returns a line
 * to print, or null for other providers.
 */
export async function prepareKmipKey(km: KeyManager, kek: string): Promise<string | null> {
  const r = await km.resolve(kek, 'cli');
  if (!(r.provider instanceof KmipKekProvider)) return null;
  const { ref, created } = await r.provider.ensureKey(r.uri);
  return created
    ? `created and activated AES-256 key ${ref.keyId} (version ${ref.version}) on the KMIP server of ${r.stored}`
    : `using KMIP key ${ref.keyId} (version ${ref.version}) of ${r.stored}`;
}

/**
 * `key revoke` of a kmip provider: revokes its active keys (every version, or one) on the server, so
 * every host's volumes bound to them lock at their next check. KMIP has no un-revoke: `key restore`
 * is refused. Returns what was revoked, or null when the provider is not kmip.
 */
export async function kmipRevocation(
  km: KeyManager,
  action: 'revoke' | 'restore',
  kek: string,
  version: number | undefined,
): Promise<string | null> {
  const r = await km.resolve(kek, 'cli');
  if (!(r.provider instanceof KmipKekProvider)) return null;
  if (action === 'restore') {
    throw new AtrestError('USAGE', `a revoked KMIP key cannot be restored (${r.stored})`, {
      hint: 'KMIP has no un-revoke: create a new version on the server (same name, higher version) and open volumes with a recovery key',
    });
  }
  const uids = await r.provider.revoke(r.uri, version === undefined ? {} : { version });
  km.auditEvent(keyEvent('revoke', { provider: r.stored, kekVersion: version }));
  return uids.length === 0
    ? `${r.stored} (already revoked on the server)`
    : `${r.stored} (KMIP key${uids.length === 1 ? '' : 's'} ${uids.join(', ')})`;
}
