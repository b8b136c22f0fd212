import { randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { readLuks2 } from '../luks2/index.js';
import type { KeyEvent } from './audit.js';
import { KeyManager } from './manager.js';
import { bindings } from './tokens.js';
import {
  decidePlatformDeletion,
  deletePlatformVersion,
  planPlatformDeletion,
  type VolumeUse,
} from './platform-delete.js';
import { PlatformKekProvider } from './platform.js';

const dir = useTempDir('atrest-pdel-', { perTest: true });
let storeDir: string;
let events: KeyEvent[];
let km: KeyManager;
let store: PlatformKekProvider;

beforeEach(() => {
  storeDir = join(dir(), 'keys');
  events = [];
  km = new KeyManager({
    keyStoreDir: storeDir,
    providersFile: join(dir(), 'providers.json'),
    audit: (e) => events.push(e),
  });
  store = new PlatformKekProvider({ keyStoreDir: storeDir });
});
afterEach(() => {
  km.close();
});

async function volume(name: string): Promise<string> {
  const image = join(dir(), name);
  await km.format({ imagePath: image, dataSize: 1 << 20 });
  return image;
}

async function rotate(image: string): Promise<void> {
  const meta = await readLuks2(image);
  for (const b of bindings(meta)) await km.rewrap(meta, b);
}

const use = (state: VolumeUse['state'], versions: number[]): VolumeUse => ({
  uuid: 'u',
  image: '/i',
  header: '/i',
  state,
  versions,
  needs: false,
});

describe('deletion policy', () => {
  it('never the newest; a readable user refuses; an unseen volume asks for confirmation; else delete', () => {
    expect(decidePlatformDeletion(3, 3, [])).toBe('newest');
    expect(decidePlatformDeletion(1, 2, [])).toBe('delete');
    expect(decidePlatformDeletion(1, 2, [use('readable', [2])])).toBe('delete');
    expect(decidePlatformDeletion(1, 2, [use('readable', [1, 2])])).toBe('refuse');
    expect(decidePlatformDeletion(1, 2, [use('unseen', [])])).toBe('confirm-unseen');
    expect(decidePlatformDeletion(1, 2, [use('unseen', []), use('readable', [1])])).toBe('refuse');
  });

  it('lists each known volume with what it uses; refuses, asks, deletes only when allowed', async () => {
    const a = await volume('a.img');
    const b = await volume('b.img');
    await km.rotatePlatform();
    let plan = await planPlatformDeletion(store, 1);
    expect(plan.decision).toBe('refuse');
    expect(plan.volumes.map((v) => [v.image, v.state, v.versions, v.needs]).sort()).toEqual([
      [a, 'readable', [1], true],
      [b, 'readable', [1], true],
    ]);
    await expect(deletePlatformVersion(store, 1, { yesDeleteUnseen: true })).rejects.toMatchObject({
      code: 'KEY_IN_USE',
      message: expect.stringMatching(/still used by 2 volumes/) as unknown,
    });
    await expect(deletePlatformVersion(store, 2)).rejects.toMatchObject({ code: 'USAGE' });

    await rotate(a);
    await mkdir(join(dir(), 'away'));
    await rename(b, join(dir(), 'away', 'b.img')); // b unseen, still on v1
    plan = await planPlatformDeletion(store, 1);
    expect(plan.decision).toBe('confirm-unseen');
    expect(plan.volumes.find((v) => v.image === b)).toMatchObject({
      state: 'unseen',
      reason: 'file not found',
    });
    await expect(deletePlatformVersion(store, 1)).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringContaining(b) as unknown,
      hint: expect.stringContaining('--yes-delete-unseen') as unknown,
    });
    // another volume now at b's path is not b: b stays unseen
    const c = join(dir(), 'c.img');
    await km.format({ imagePath: c, dataSize: 1 << 20 });
    await rename(c, b);
    plan = await planPlatformDeletion(store, 1);
    expect(plan.volumes.find((v) => v.image === b)).toMatchObject({
      state: 'unseen',
      reason: expect.stringMatching(/another volume \(UUID/) as unknown,
    });
    expect(plan.decision).toBe('confirm-unseen');
    expect(await store.versions()).toEqual([1, 2]);

    await deletePlatformVersion(store, 1, { yesDeleteUnseen: true, audit: (e) => events.push(e) });
    expect(await store.versions()).toEqual([2]);
    expect((await readdir(storeDir)).sort()).toEqual(['platform-kek.v2', 'store-id', 'volumes']);
    expect(events.filter((e) => e.event === 'delete-platform-version')).toEqual([
      {
        event: 'delete-platform-version',
        provider: 'platform:',
        keyId: await store.keyId(),
        kekVersion: 1,
        reason: expect.stringMatching(/confirmed past 2 unseen volume/) as unknown,
      },
    ]);
    (await km.unlock(await readLuks2(a))).volumeKey.fill(0);
  });

  it('a volume moved to a customer key no longer needs the platform version', async () => {
    const a = await volume('a.img');
    await km.rotatePlatform();
    const kek = join(dir(), 'kek');
    await writeFile(kek, randomBytes(32), { mode: 0o600 });
    await writeFile(
      join(dir(), 'providers.json'),
      JSON.stringify({ providers: { cmk: { type: 'file', path: kek } } }),
      {
        mode: 0o644,
      },
    );
    await km.useKek(await readLuks2(a), 'cmk');
    const plan = await planPlatformDeletion(store, 1);
    expect(plan.volumes).toMatchObject([{ image: a, state: 'readable', versions: [], needs: false }]);
    expect(plan.decision).toBe('delete');
  });

  it('a crash after the tombstone rename: the version is gone; the tombstone is zeroed and removed next time', async () => {
    await volume('a.img');
    await km.rotatePlatform();
    await km.rotatePlatform();
    await rotate(join(dir(), 'a.img'));
    const keyFile = join(storeDir, 'platform-kek.v1');
    const watch = join(dir(), 'v1-inode');
    await link(keyFile, watch); // sees the inode's bytes after the store lets go of it
    expect((await readFile(watch)).equals(Buffer.alloc(32))).toBe(false);
    await new Promise<void>((reached, failed) => {
      deletePlatformVersion(store, 1, {
        killPoint: () => {
          reached();
          return new Promise<void>(() => undefined);
        },
      }).then(() => failed(new Error('no crash')), failed);
    });
    expect(await store.versions()).toEqual([2, 3]);
    expect((await readdir(storeDir)).filter((n) => n.startsWith('.platform-kek.v1.deleted-'))).toHaveLength(
      1,
    );
    await deletePlatformVersion(store, 2);
    expect((await readdir(storeDir)).sort()).toEqual(['platform-kek.v3', 'store-id', 'volumes']);
    expect((await readFile(watch)).equals(Buffer.alloc(32))).toBe(true);
  });
});
