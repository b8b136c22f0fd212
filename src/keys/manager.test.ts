import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatLuks2, readLuks2, unlockVolumeKey, type JsonObject } from '../luks2/index.js';
import type { KeyEvent } from './audit.js';
import { FileKekProvider } from './file-provider.js';
import { listKeyslots } from './keyslots.js';
import { KeyManager } from './manager.js';
import { bindings } from './tokens.js';
import { storedUri } from './kek.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { rejects } from '../errors/rejects.test-helper.js';

const tmp = useTempDir('atrest-km-', { perTest: true });
let dir: string;
let store: string;
let events: KeyEvent[];
let km: KeyManager;
const FAST = { type: 'pbkdf2', iterations: 1000 } as const;

beforeEach(() => {
  dir = tmp();
  store = join(dir, 'store');
  events = [];
  km = new KeyManager({
    keyStoreDir: store,
    providersFile: join(dir, 'providers.json'),
    audit: (e) => events.push(e),
  });
});
afterEach(() => {
  km.close();
});

async function platformVolume(name = 'a.img'): Promise<string> {
  const image = join(dir, name);
  await km.format({ imagePath: image, dataSize: 1 << 20 });
  return image;
}

async function kekFile(name = 'kek', bytes = 32): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, randomBytes(bytes), { mode: 0o600 });
  return path;
}

/** Writes providers.json with one file provider per name (before the manager first needs it). */
async function configure(files: Record<string, string>): Promise<void> {
  const providers = Object.fromEntries(
    Object.entries(files).map(([name, path]) => [name, { type: 'file', path }]),
  );
  await writeFile(join(dir, 'providers.json'), JSON.stringify({ providers }), { mode: 0o644 });
}

describe('KeyManager', () => {
  it('formats bound to the platform key and unlocks through the token, no key file needed', async () => {
    const image = await platformVolume();
    const meta = await readLuks2(image);
    expect(listKeyslots(meta)).toEqual([
      {
        slot: 0,
        kind: 'platform',
        token: 0,
        kdf: 'pbkdf2',
        priority: 1,
        kek: 'platform:',
        keyId: expect.stringMatching(/^platform-kek@[0-9a-f]{16}$/) as unknown,
        kekVersion: 1,
        usable: true,
      },
    ]);
    const u = await km.unlock(meta);
    expect(u.keyslot).toBe(0);
    expect(u.volumeKey.length).toBe(64);
    expect(u.binding?.type).toBe('atrest-platform');
    // the store was created 0700 with v1 0600 and a record of the volume
    expect((await readdir(store)).sort()).toEqual(['platform-kek.v1', 'store-id', 'volumes']);
    expect(events.map((e) => e.event)).toEqual(['wrap', 'unlock']);
    expect(events[1]).toMatchObject({ volume: image, slot: 0, provider: 'platform:', kekVersion: 1 });
  });

  it('rotation re-wraps only the token; old platform versions are kept, even once no volume uses them', async () => {
    const a = await platformVolume('a.img');
    const b = await platformVolume('b.img');
    const before = await readLuks2(a);
    const area = before.keyslots[0]?.area;
    expect((await km.rotatePlatform()).version).toBe(2);
    const metaA = await readLuks2(a);
    const [bindA] = bindings(metaA);
    if (!bindA) throw new Error('no binding');
    expect(await km.rewrap(metaA, bindA)).toEqual({ from: 1, to: 2, kek: 'platform:' });
    const afterA = await readLuks2(a);
    expect(afterA.keyslots[0]?.area).toEqual(area); // same keyslot
    expect(bindings(afterA)[0]?.version).toBe(2);
    expect(await km.rewrap(afterA, bindings(afterA)[0] as never)).toBeNull();
    const metaB = await readLuks2(b);
    await km.rewrap(metaB, bindings(metaB)[0] as never);
    // nothing deletes a version on its own: v1 stays until `key delete-platform-version 1`
    expect((await readdir(store)).filter((n) => n.startsWith('platform-kek')).sort()).toEqual([
      'platform-kek.v1',
      'platform-kek.v2',
    ]);
    expect(events.map((e) => e.event)).not.toContain('delete-platform-version');
    (await km.unlock(await readLuks2(a))).volumeKey.fill(0);
    (await km.unlock(await readLuks2(b))).volumeKey.fill(0);
  });

  it('moves to a customer key file, removing the platform keyslot only after the new one unlocks', async () => {
    const image = await platformVolume();
    const kek = await kekFile();
    await configure({ 'kek-a': kek });
    const meta = await readLuks2(image);
    const r = await km.useKek(meta, 'kek-a');
    expect(r.removed).toEqual([0]);
    const after = await readLuks2(image);
    // the token names the provider, never the key file
    expect(listKeyslots(after).map((e) => [e.slot, e.kind, e.kek, e.kekVersion])).toEqual([
      [r.keyslot, 'customer', 'ref:kek-a', 1],
    ]);
    expect(after.tokens[0]?.raw.atrest_kek).toBe('ref:kek-a');
    expect(after.tokens.map((t) => t.type)).toEqual(['atrest-cmk']);
    (await km.unlock(after)).volumeKey.fill(0);
    // revocation: a clear error; restore: works again
    const fp = new FileKekProvider();
    await fp.revoke(`file:${kek}`);
    await rejects(km.unlock(after), 'KEY_UNAVAILABLE', /key revoked or unavailable/);
    expect(events.at(-1)).toMatchObject({ event: 'unlock-failed', code: 'KEY_UNAVAILABLE' });
    await fp.restore(`file:${kek}`);
    (await km.unlock(after)).volumeKey.fill(0);
    // a new version of the key file is picked up by rewrap
    await writeFile(`${kek}.v2`, randomBytes(32), { mode: 0o600 });
    expect(await km.rewrap(after, bindings(after)[0] as never)).toEqual({
      from: 1,
      to: 2,
      kek: 'ref:kek-a',
    });
  });

  it('a legacy full-URI token opens only when it matches providers.json; rewrap rewrites it to ref:NAME', async () => {
    const image = await platformVolume();
    const kek = await kekFile();
    const other = await kekFile('other');
    await configure({ 'kek-a': kek });
    await km.useKek(await readLuks2(image), 'kek-a');
    const { writeMetadata } = await import('../luks2/volume.js');
    const setKek = async (value: string): Promise<void> => {
      const meta = await readLuks2(image);
      const raw = structuredClone(meta.json);
      const id = String(meta.tokens[0]?.id);
      ((raw.tokens as JsonObject)[id] as JsonObject).atrest_kek = value;
      await writeMetadata(meta, raw);
    };
    // as written before references: the full URI of the key file
    await setKek(`file:${kek}`);
    const legacy = await readLuks2(image);
    (await km.unlock(legacy)).volumeKey.fill(0);
    expect(await km.rewrap(legacy, bindings(legacy)[0] as never)).toEqual({
      from: 1,
      to: 1,
      kek: 'ref:kek-a',
    });
    expect((await readLuks2(image)).tokens[0]?.raw.atrest_kek).toBe('ref:kek-a');
    // a full URI naming any other file is refused, even one that holds a valid KEK
    await setKek(`file:${other}`);
    await rejects(km.unlock(await readLuks2(image)), 'KEK_NOT_CONFIGURED', /matches no provider/);
    await setKek('ref:kek-b');
    await rejects(
      km.unlock(await readLuks2(image)),
      'KEK_NOT_CONFIGURED',
      /"kek-b", which is not configured/,
    );
  });

  it('recovery keyslots unlock with the printed passphrase; the last usable keyslot cannot be removed', async () => {
    const image = await platformVolume();
    const meta = await readLuks2(image);
    const { keyslot, passphrase } = await km.addRecovery(meta, {}, FAST);
    expect(passphrase.toString('latin1')).toMatch(/^([0-9a-z]{5}-){7}[0-9a-z]{5}$/);
    const after = await readLuks2(image);
    expect(listKeyslots(after).map((e) => [e.slot, e.kind])).toEqual([
      [0, 'platform'],
      [keyslot, 'recovery'],
    ]);
    expect((await unlockVolumeKey(after, passphrase)).keyslot).toBe(keyslot);
    await km.removeSlot(after, 0);
    const only = await readLuks2(image);
    expect(only.tokens.map((t) => t.type)).toEqual(['atrest-recovery']);
    await rejects(km.removeSlot(only, keyslot), 'USAGE', /last one that can unlock/);
    await expect(km.unlock(only)).rejects.toMatchObject({ code: 'WRONG_KEY' });
    (await km.unlock(only, { passphrase })).volumeKey.fill(0);
    expect(JSON.stringify(events)).not.toContain(passphrase.toString('latin1').slice(0, 11));
    passphrase.fill(0);
  });

  it("a volume bound to another store's platform key says so", async () => {
    const image = await platformVolume();
    const other = new KeyManager({ keyStoreDir: join(dir, 'other-store') });
    await rejects(
      other.unlock(await readLuks2(image)),
      'KEY_UNAVAILABLE',
      /platform key of another key store/,
    );
    other.close();
  });

  it('a token that does not match its keyslot is a clear WRONG_KEY', async () => {
    const a = await platformVolume('a.img');
    const b = await platformVolume('b.img');
    const wrappedB = (await readLuks2(b)).tokens[0]?.raw.atrest_wrapped;
    const meta = await readLuks2(a);
    const raw = structuredClone(meta.json);
    ((raw.tokens as JsonObject)['0'] as JsonObject).atrest_wrapped = wrappedB ?? '';
    const { writeMetadata } = await import('../luks2/volume.js');
    await writeMetadata(meta, raw);
    await rejects(
      km.unlock(await readLuks2(a)),
      'WRONG_KEY',
      /token 0 \(atrest-platform\) does not match its key slot 0/,
    );
  });

  it('refuses a key store with loose permissions, and a short KEK file, leaving the image unchanged', async () => {
    await mkdir(store, { mode: 0o700 });
    await chmod(store, 0o755);
    const image = join(dir, 'x.img');
    await rejects(
      km.format({ imagePath: image, dataSize: 1 << 20 }),
      'USAGE',
      /mode 755 lets group or others access it/,
    );
    await chmod(store, 0o700);
    await configure({ short: await kekFile('short', 16) });
    await rejects(km.format({ imagePath: image, dataSize: 1 << 20 }, 'short'), 'USAGE', /KEK too short/);
    await expect(readdir(dir)).resolves.not.toContain('x.img');
    await rejects(
      km.format({ imagePath: image, dataSize: 1 << 20 }, 'vault:x'),
      'USAGE',
      /unknown key provider scheme vault/,
    );
  });

  it('FIPS mode unlocks only PBKDF2 keyslots', async () => {
    const image = join(dir, 'argon.img');
    const pass = Buffer.from('pass');
    await formatLuks2({
      imagePath: image,
      dataSize: 1 << 20,
      passphrase: pass,
      kdf: { type: 'argon2id', time: 1, memoryKiB: 1024, cpus: 1 },
    });
    const fips = new KeyManager({ keyStoreDir: store, fips: true });
    await rejects(fips.unlock(await readLuks2(image), { passphrase: pass }), 'WRONG_KEY', /FIPS/);
    (await km.unlock(await readLuks2(image), { passphrase: pass })).volumeKey.fill(0);
  });
});

describe('helpers', () => {
  it('stores KEK URIs without a PIN, keeping module-path and pin-source', () => {
    expect(storedUri('pkcs11:token=a;object=k?module-path=/m.so&pin-value=1234')).toBe(
      'pkcs11:token=a;object=k?module-path=/m.so',
    );
    expect(storedUri('pkcs11:token=a;object=k?pin-value=1234&pin-source=/p')).toBe(
      'pkcs11:token=a;object=k?pin-source=/p',
    );
    expect(storedUri('pkcs11:token=a;pin-value=9;object=k')).toBe('pkcs11:token=a;object=k');
  });
});
