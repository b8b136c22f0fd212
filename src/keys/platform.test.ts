import { randomBytes } from 'node:crypto';
import { chmod, chown, readdir, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { PlatformKekProvider, rotatePlatform } from './platform.js';

const root = useTempDir('atrest-platform-');
let n = 0;
const fresh = (): string => join(root(), `store-${n++}`);

describe('PlatformKekProvider', () => {
  it('creates the store (0700) and v1 (0600, 32 bytes) on first use, and round-trips', async () => {
    const dir = join(fresh(), 'keys');
    const p = new PlatformKekProvider({ keyStoreDir: dir });
    const ref = await p.current('platform:');
    expect(ref).toMatchObject({ uri: 'platform:', version: 1 });
    expect(ref.keyId).toMatch(/^platform-kek@[0-9a-f]{16}$/);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const f = await stat(join(dir, 'platform-kek.v1'));
    expect(f.mode & 0o777).toBe(0o600);
    expect(f.size).toBe(32);
    expect((await readdir(dir)).sort()).toEqual(['platform-kek.v1', 'store-id']);
    const secret = randomBytes(32);
    const w = await p.wrap(ref, secret);
    expect((await p.unwrap(ref, w)).equals(secret)).toBe(true);
    expect(await p.current('platform:default')).toEqual(ref);
    await expect(p.current('platform:other')).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('rotates to new versions, keeps old ones until deleteVersion, never deletes the newest', async () => {
    const dir = fresh();
    const p = new PlatformKekProvider({ keyStoreDir: dir });
    const v1 = await p.current('platform:');
    const w1 = await p.wrap(v1, Buffer.from('s1'));
    const v2 = await rotatePlatform({ keyStoreDir: dir });
    expect(v2.version).toBe(2);
    expect((await p.current('platform:')).version).toBe(2);
    expect((await p.unwrap(v1, w1)).toString()).toBe('s1');
    await expect(p.unwrap(v2, w1)).rejects.toMatchObject({ code: 'WRONG_KEY' });
    expect((await p.rotatePlatform()).version).toBe(3);
    expect(await p.versions()).toEqual([1, 2, 3]);
    await expect(p.deleteVersion(3)).rejects.toMatchObject({ code: 'USAGE', message: /newest/ });
    await expect(p.deleteVersion(4)).rejects.toMatchObject({ code: 'FILE_NOT_FOUND' });
    await p.deleteVersion(1);
    expect(await p.versions()).toEqual([2, 3]);
    expect((await readdir(dir)).sort()).toEqual(['platform-kek.v2', 'platform-kek.v3', 'store-id']);
    expect(await p.available(v1)).toBe(false);
    await expect(p.unwrap(v1, w1)).rejects.toMatchObject({
      code: 'KEY_UNAVAILABLE',
      message: expect.stringContaining('key revoked or unavailable') as unknown,
    });
  });

  it('refuses a store directory with group/other access, saying how to fix it', async () => {
    const dir = fresh();
    const p = new PlatformKekProvider({ keyStoreDir: dir });
    await p.current('platform:');
    await chmod(dir, 0o755);
    const q = new PlatformKekProvider({ keyStoreDir: dir });
    await expect(q.current('platform:')).rejects.toMatchObject({
      code: 'USAGE',
      hint: `fix with: chmod 700 ${dir}`,
    });
  });

  it('refuses key files with loose modes or the wrong length', async () => {
    const dir = fresh();
    const p = new PlatformKekProvider({ keyStoreDir: dir });
    const ref = await p.current('platform:');
    const f = join(dir, 'platform-kek.v1');
    await chmod(f, 0o640);
    await expect(p.wrap(ref, Buffer.from('x'))).rejects.toMatchObject({
      code: 'USAGE',
      hint: `fix with: chmod 600 ${f}`,
    });
    expect(await p.available(ref)).toBe(false);
    await unlink(f);
    await writeFile(f, randomBytes(16), { mode: 0o600 });
    await expect(p.wrap(ref, Buffer.from('x'))).rejects.toThrow(/KEK too short/);
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a store not owned by the running uid', async () => {
    const dir = fresh();
    await new PlatformKekProvider({ keyStoreDir: dir }).current('platform:');
    await chown(dir, 4242, 4242);
    await expect(new PlatformKekProvider({ keyStoreDir: dir }).current('platform:')).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringContaining('owned by uid 4242') as unknown,
    });
  });
});
