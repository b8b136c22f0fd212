// The key manager with a kmip provider (fake server): bind, unlock, revoke, a new version re-wrapped; the token stores only ref:NAME.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDir } from '../../test-helpers/temp-dir.test-helper.js';
import { readLuks2 } from '../../luks2/index.js';
import { KeyManager } from '../manager.js';
import { bindings } from '../tokens.js';
import { parseProviders } from '../provider-config.js';
import { FakeKmipServer, fakeTls } from './fake-server.test-helper.js';
import { KmipKekProvider } from './provider.js';

const dir = useTempDir('atrest-kmip-km-', { perTest: true });

const table = parseProviders(
  {
    providers: {
      fleet: {
        type: 'kmip',
        host: 'kms.example.com',
        ca: '/etc/atrest/kmip-ca.pem',
        cert: '/etc/atrest/kmip.pem',
        key: '/etc/atrest/kmip.key',
        keyName: 'fleet-kek',
      },
    },
  },
  '/etc/atrest/providers.json',
);

describe('KeyManager with a kmip provider', () => {
  it('binds through the server, unlocks, picks up a new version by re-wrapping, and a revoked key does not unlock', async () => {
    const server = new FakeKmipServer();
    const kmip = new KmipKekProvider({ connect: server.connect, readTls: fakeTls });
    const km = new KeyManager({ providerTable: table, kmip });
    const v1 = server.add('fleet-kek', 1);
    const image = join(dir(), 'v.img');
    const f = await km.format({ imagePath: image, dataSize: 1 << 20 }, 'kmip:fleet');
    expect(f.ref).toMatchObject({ uri: 'ref:fleet', keyId: v1, version: 1 });
    let meta = await readLuks2(image);
    const [b] = bindings(meta);
    expect(b).toMatchObject({ kek: 'ref:fleet', keyId: v1, version: 1, wrapAlg: 'kmip-encrypt-v1' });
    // nothing about the server is in the image
    const head = (await readFile(image)).subarray(0, 64 * 1024).toString('latin1');
    expect(head).not.toContain('kms.example.com');
    expect(head).not.toContain('/etc/atrest/kmip');
    (await km.unlock(meta)).volumeKey.fill(0);

    const v2 = server.add('fleet-kek', 2);
    expect(await km.rewrap(meta, b!)).toEqual({ from: 1, to: 2, kek: 'ref:fleet' });
    meta = await readLuks2(image);
    expect(bindings(meta)[0]).toMatchObject({ keyId: v2, version: 2 });
    (await km.unlock(meta)).volumeKey.fill(0);

    server.keys.get(v2)!.state = 'deactivated';
    await expect(km.unlock(meta)).rejects.toMatchObject({
      code: 'KEY_UNAVAILABLE',
      message: expect.stringContaining('is deactivated') as unknown,
    });
    server.down = true;
    await expect(km.unlock(meta)).rejects.toMatchObject({
      code: 'KEY_SERVER_UNREACHABLE',
      message: expect.stringContaining('kms.example.com:5696') as unknown,
    });
    km.close();
  });
});
