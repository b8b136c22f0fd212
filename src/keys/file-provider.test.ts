import { randomBytes } from 'node:crypto';
import { lstat, readFile, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileKekProvider, parseFileUri } from './file-provider.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const dir = useTempDir('atrest-filekek-');
const p = new FileKekProvider();

describe('parseFileUri', () => {
  it('accepts file:/abs and file:///abs, refuses hosts and relative paths', () => {
    expect(parseFileUri('file:/etc/atrest/kek')).toBe('/etc/atrest/kek');
    expect(parseFileUri('file:///etc/a%20b')).toBe('/etc/a b');
    expect(() => parseFileUri('file://host/kek')).toThrow(expect.objectContaining({ code: 'USAGE' }));
    expect(() => parseFileUri('file:kek')).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });
});

describe('FileKekProvider', () => {
  it('picks the newest sibling version, wraps and unwraps under each', async () => {
    const base = join(dir(), 'kek');
    const uri = `file:${base}`;
    await writeFile(base, randomBytes(32), { mode: 0o600 });
    const v1 = await p.current(uri);
    expect(v1).toEqual({ uri, keyId: base, version: 1 });
    const w1 = await p.wrap(v1, Buffer.from('one'));
    await writeFile(`${base}.v3`, randomBytes(32), { mode: 0o600 });
    await writeFile(`${base}.vx`, randomBytes(32), { mode: 0o600 });
    const v3 = await p.current(uri);
    expect(v3.version).toBe(3);
    expect(await p.versions(uri)).toEqual([1, 3]);
    expect((await p.unwrap(v1, w1)).toString()).toBe('one');
    await expect(p.unwrap(v3, w1)).rejects.toMatchObject({ code: 'WRONG_KEY' });
  });

  it('revoke() makes every version unavailable with KEY_UNAVAILABLE; restore() brings it back', async () => {
    const base = join(dir(), 'rk');
    const uri = `file:${base}`;
    await writeFile(base, randomBytes(32), { mode: 0o600 });
    const ref = await p.current(uri);
    const w = await p.wrap(ref, Buffer.from('secret'));
    await p.revoke(uri);
    expect(await p.available(ref)).toBe(false);
    await expect(p.unwrap(ref, w)).rejects.toMatchObject({
      code: 'KEY_UNAVAILABLE',
      message: expect.stringContaining('key revoked or unavailable') as unknown,
    });
    await expect(p.current(uri)).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
    await p.restore(uri);
    expect(await p.available(ref)).toBe(true);
    expect((await p.unwrap(ref, w)).toString()).toBe('secret');
  });

  it('per-version revocation falls back to the older version; removing the file revokes too', async () => {
    const base = join(dir(), 'pv');
    const uri = `file:${base}`;
    await writeFile(base, randomBytes(32), { mode: 0o600 });
    await writeFile(`${base}.v2`, randomBytes(32), { mode: 0o600 });
    await p.revoke(uri, { version: 2 });
    expect((await p.current(uri)).version).toBe(1);
    const v1 = await p.current(uri);
    await unlink(base);
    expect(await p.available(v1)).toBe(false);
    await expect(p.wrap(v1, Buffer.from('x'))).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
    await expect(p.current(uri)).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
  });

  it('refuses key files of the wrong length or readable by others', async () => {
    const short = join(dir(), 'short');
    await writeFile(short, randomBytes(31), { mode: 0o600 });
    await expect(p.wrap(await p.current(`file:${short}`), Buffer.from('x'))).rejects.toThrow(/KEK too short/);
    const long = join(dir(), 'long');
    await writeFile(long, randomBytes(64), { mode: 0o600 });
    await expect(p.wrap(await p.current(`file:${long}`), Buffer.from('x'))).rejects.toThrow(/KEK too long/);
    const open = join(dir(), 'open');
    await writeFile(open, randomBytes(32), { mode: 0o644 });
    await expect(p.wrap(await p.current(`file:${open}`), Buffer.from('x'))).rejects.toMatchObject({
      code: 'USAGE',
    });
  });

  it('revoke() never follows a symlink at the marker path and fails closed on one', async () => {
    const base = join(dir(), 'sl');
    const uri = `file:${base}`;
    await writeFile(base, randomBytes(32), { mode: 0o600 });
    const ref = await p.current(uri);
    // a symlink planted where the marker goes, to a file that does not exist yet and to one that does
    const absent = join(dir(), 'victim-absent');
    await symlink(absent, `${base}.revoked`);
    // a dangling symlink at the marker path already counts as revoked (fail closed)
    expect(await p.available(ref)).toBe(false);
    await expect(p.revoke(uri)).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringContaining('not a regular file') as unknown,
    });
    await expect(lstat(absent)).rejects.toMatchObject({ code: 'ENOENT' });
    const present = join(dir(), 'victim-present');
    await writeFile(present, 'precious\n', { mode: 0o600 });
    await symlink(present, `${base}.v1.revoked`);
    await expect(p.revoke(uri, { version: 1 })).rejects.toMatchObject({ code: 'USAGE' });
    expect(await readFile(present, 'utf8')).toBe('precious\n');
    // after removing the planted links, revoke creates a regular 0600 file; revoking again is fine
    await unlink(`${base}.revoked`);
    await unlink(`${base}.v1.revoked`);
    await p.revoke(uri);
    const st = await lstat(`${base}.revoked`);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    await p.revoke(uri);
    expect(await p.available(ref)).toBe(false);
    await p.restore(uri);
    expect(await p.available(ref)).toBe(true);
  });
});
