import { describe, expect, it } from 'vitest';
import { KeyManager, parseProviders } from '../keys/index.js';
import { FakeKmipServer, fakeTls } from '../keys/kmip/fake-server.test-helper.js';
import { KmipKekProvider } from '../keys/kmip/provider.js';
import { kmipRevocation, prepareKmipKey } from './kmip-keys.js';

const table = parseProviders(
  {
    providers: {
      fleet: {
        type: 'kmip',
        host: '127.0.0.1',
        ca: '/etc/atrest/kmip-ca.pem',
        cert: '/etc/atrest/kmip.pem',
        key: '/etc/atrest/kmip.key',
      },
      'kek-a': { type: 'file', path: '/etc/atrest/kek-a.key' },
    },
  },
  '/etc/atrest/providers.json',
);

describe('key use / key revoke for kmip providers', () => {
  it('key use creates and activates the key once, then finds it; revoke revokes it on the server; restore is refused', async () => {
    const server = new FakeKmipServer();
    const events: unknown[] = [];
    const km = new KeyManager({
      providerTable: table,
      kmip: new KmipKekProvider({ connect: server.connect, readTls: fakeTls }),
      audit: (e) => events.push(e),
    });
    expect(await prepareKmipKey(km, 'kmip:fleet')).toMatch(
      /^created and activated AES-256 key 1 \(version 1\) on the KMIP server of ref:fleet$/,
    );
    expect(server.keys.get('1')).toMatchObject({ name: 'fleet', version: 1, state: 'active' });
    expect(await prepareKmipKey(km, 'fleet')).toBe('using KMIP key 1 (version 1) of ref:fleet');
    expect(server.keys.size).toBe(1);
    expect(await prepareKmipKey(km, 'kek-a')).toBeNull();

    expect(await kmipRevocation(km, 'revoke', 'kmip:fleet', undefined)).toBe('ref:fleet (KMIP key 1)');
    expect(server.keys.get('1')?.state).toBe('deactivated');
    expect(events).toContainEqual({ event: 'revoke', provider: 'ref:fleet' });
    expect(await kmipRevocation(km, 'revoke', 'fleet', undefined)).toBe(
      'ref:fleet (already revoked on the server)',
    );
    await expect(kmipRevocation(km, 'restore', 'kmip:fleet', undefined)).rejects.toMatchObject({
      code: 'USAGE',
      message: 'a revoked KMIP key cannot be restored (ref:fleet)',
    });
    expect(await kmipRevocation(km, 'revoke', 'kek-a', undefined)).toBeNull();
    // a key name whose keys are all revoked is not silently replaced by key use
    await expect(prepareKmipKey(km, 'kmip:fleet')).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
    km.close();
  });
});
