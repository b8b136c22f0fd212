import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FakeKmipServer as FakeServer, fakeTls } from './fake-server.test-helper.js';
import { packBlob, unpackBlob } from './blob.js';
import { isUnreachable, KmipKekProvider, UNREACHABLE_CODE, type KmipTarget } from './provider.js';

const TARGET: KmipTarget = {
  name: 'fleet',
  host: '127.0.0.1',
  port: 5696,
  ca: '/etc/atrest/ca.pem',
  cert: '/etc/atrest/c.pem',
  key: '/etc/atrest/c.key',
  keyName: 'fleet-kek',
};

function setup(target: KmipTarget = TARGET): { s: FakeServer; p: KmipKekProvider; uri: string } {
  const s = new FakeServer();
  const p = new KmipKekProvider({
    connect: s.connect,
    readTls: fakeTls,
  });
  return { s, p, uri: p.register(target) };
}

describe('KmipKekProvider', () => {
  it('key use: creates and activates an AES-256 key when the server has none, then finds it', async () => {
    const { s, p, uri } = setup();
    expect(uri).toMatch(/^kmip:fleet#[0-9a-f]{12}$/);
    const made = await p.ensureKey(uri);
    expect(made.created).toBe(true);
    expect(s.keys.get(made.ref.keyId)).toMatchObject({ name: 'fleet-kek', version: 1, state: 'active' });
    const again = await p.ensureKey(uri);
    expect(again).toEqual({ ref: made.ref, created: false });
    expect(s.keys.size).toBe(1);
  });

  it('key use: activates a pre-active key; refuses to replace keys that are all revoked', async () => {
    const { s, p, uri } = setup();
    const pre = s.add('fleet-kek', 1, 'pre-active');
    expect((await p.ensureKey(uri)).ref.keyId).toBe(pre);
    expect(s.keys.get(pre)?.state).toBe('active');
    s.keys.get(pre)!.state = 'deactivated';
    await expect(p.ensureKey(uri)).rejects.toMatchObject({
      code: 'KEY_UNAVAILABLE',
      message: expect.stringContaining('has no active version (deactivated)') as unknown,
    });
    expect(s.keys.size).toBe(1);
  });

  it('current() is the newest active version of the named key; other names are ignored', async () => {
    const { s, p, uri } = setup();
    s.add('fleet-kek', 1);
    const v3 = s.add('fleet-kek', 3);
    s.add('fleet-kek', 4, 'deactivated');
    s.add('other', 9);
    expect(await p.current(uri)).toEqual({ uri, keyId: v3, version: 3 });
    const v5 = s.add('fleet-kek', 5);
    expect(await p.current(uri)).toEqual({ uri, keyId: v5, version: 5 });
  });

  it('wrap and unwrap run on the server; the blob carries the IV and never the secret', async () => {
    const { s, p, uri } = setup();
    s.add('fleet-kek', 1);
    const ref = await p.current(uri);
    const secret = randomBytes(32);
    const blob = await p.wrap(ref, secret);
    expect(blob.includes(secret)).toBe(false);
    const { iv, data } = unpackBlob(blob);
    expect(iv).toHaveLength(16);
    expect(data.length).toBeGreaterThanOrEqual(32);
    expect(await p.unwrap(ref, blob)).toEqual(secret);
    expect(packBlob(iv, data)).toEqual(blob);
    expect(() => unpackBlob(Buffer.from('nope'))).toThrow(/not a KMIP-wrapped key/);
  });

  it("a token naming another key's uid is refused before any Decrypt", async () => {
    const { s, p, uri } = setup();
    const own = s.add('fleet-kek', 1);
    const foreign = s.add('someone-else', 1);
    const blob = await p.wrap({ uri, keyId: own, version: 1 }, randomBytes(32));
    await expect(p.unwrap({ uri, keyId: foreign, version: 1 }, blob)).rejects.toMatchObject({
      code: 'KEY_UNAVAILABLE',
      message: expect.stringContaining('is not the key of provider fleet') as unknown,
    });
    expect(await p.available({ uri, keyId: foreign, version: 1 })).toBe(false);
    expect(s.decrypts).toBe(0);
  });

  it('available(): active only; revoked, deactivated, destroyed, unknown are unavailable (unwrap says KEY_UNAVAILABLE)', async () => {
    const { s, p, uri } = setup();
    const uid = s.add('fleet-kek', 1);
    const ref = { uri, keyId: uid, version: 1 };
    const blob = await p.wrap(ref, randomBytes(32));
    expect(await p.available(ref)).toBe(true);
    for (const state of ['deactivated', 'compromised', 'destroyed', 'destroyed-compromised', 'pre-active']) {
      s.keys.get(uid)!.state = state;
      expect(await p.available(ref), state).toBe(false);
      await expect(p.unwrap(ref, blob)).rejects.toMatchObject({
        code: 'KEY_UNAVAILABLE',
        message: expect.stringContaining(`is ${state}`) as unknown,
      });
    }
    s.keys.delete(uid);
    expect(await p.available(ref)).toBe(false);
    await expect(p.unwrap(ref, blob)).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
  });

  it('an unreachable server is not "unavailable": available() throws an unreachable error naming the address', async () => {
    const { s, p, uri } = setup();
    const uid = s.add('fleet-kek', 1);
    const ref = { uri, keyId: uid, version: 1 };
    expect(await p.available(ref)).toBe(true);
    s.down = true;
    const err = await p.available(ref).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isUnreachable(err)).toBe(true);
    expect((err as Error).message).toContain('127.0.0.1:5696');
    await expect(p.current(uri)).rejects.toMatchObject({ code: UNREACHABLE_CODE });
    s.down = false;
    expect(await p.available(ref)).toBe(true);
  });

  it('keeps one client while the TLS files stay the same; new files get a new client', async () => {
    const s = new FakeServer();
    let cert = Buffer.from('C');
    const p = new KmipKekProvider({
      connect: s.connect,
      readTls: () => Promise.resolve({ ca: Buffer.from('CA'), cert, key: Buffer.from('K') }),
    });
    const uri = p.register(TARGET);
    const ref = { uri, keyId: s.add('fleet-kek', 1), version: 1 };
    for (let i = 0; i < 3; i++) expect(await p.available(ref)).toBe(true);
    expect(s.connects).toBe(1);
    cert = Buffer.from('renewed');
    expect(await p.available(ref)).toBe(true);
    expect(s.connects).toBe(2);
    await p.close();
  });

  it('key revoke: every active version, or one; already revoked keys are left alone', async () => {
    const { s, p, uri } = setup();
    const v1 = s.add('fleet-kek', 1);
    const v2 = s.add('fleet-kek', 2);
    expect(await p.revoke(uri, { version: 2 })).toEqual([v2]);
    expect(s.keys.get(v2)?.state).toBe('deactivated');
    expect(s.keys.get(v1)?.state).toBe('active');
    expect(await p.revoke(uri)).toEqual([v1]);
    expect(await p.revoke(uri)).toEqual([]);
    await expect(p.revoke(uri, { version: 7 })).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
  });

  it('a fixed uid: only that key, its version from the server', async () => {
    const s0 = setup();
    const uid = s0.s.add('anything', 4);
    const { name, host, port, ca, cert, key } = TARGET;
    const { s, p, uri } = setup({ name, host, port, ca, cert, key, uid });
    // a separate fake server: copy the key over
    s.keys.set(uid, s0.s.keys.get(uid)!);
    expect(await p.current(uri)).toEqual({ uri, keyId: uid, version: 4 });
    await expect(p.available({ uri, keyId: '999', version: 4 })).resolves.toBe(false);
  });

  it('two configurations of one name never share a target; an unregistered kmip: URI is not configured', async () => {
    const { p, uri } = setup();
    const other = p.register({ ...TARGET, host: '10.9.9.9' });
    expect(other).not.toBe(uri);
    expect(p.register({ ...TARGET })).toBe(uri);
    await expect(p.current('kmip:fleet')).rejects.toMatchObject({ code: 'KEK_NOT_CONFIGURED' });
    await expect(p.current('kmip:nope')).rejects.toMatchObject({ code: 'KEK_NOT_CONFIGURED' });
    await expect(p.current('kmip://evil.example:5696/x')).rejects.toMatchObject({
      code: 'KEK_NOT_CONFIGURED',
    });
  });
});
