import { spawn } from 'node:child_process';
import { link, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isAtrestError } from '../errors/index.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { acquireImageLock, processStartTime } from './image-lock.js';

const dir = useTempDir('atrest-ilock-');
const lockDir = (): string => join(dir(), 'locks');

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  const pid = child.pid ?? 0;
  await new Promise((r) => child.on('close', r));
  return pid;
}

describe('acquireImageLock', () => {
  it('excludes a second holder of the same image, by any path, until released', async () => {
    const image = join(dir(), 'a.img');
    await writeFile(image, 'x');
    const alias = join(dir(), 'a-alias.img');
    await link(image, alias);
    const lock = await acquireImageLock(image, lockDir());
    const err = await acquireImageLock(alias, lockDir()).catch((e: unknown) => e);
    expect(isAtrestError(err) && err.code).toBe('IMAGE_BUSY');
    expect(String((err as Error).message)).toContain(String(process.pid));
    await lock.release();
    await lock.release();
    const again = await acquireImageLock(alias, lockDir());
    await again.release();
    expect((await readdir(lockDir())).filter((f) => !f.startsWith('.'))).toEqual([]);
  });

  it('takes over a lock left by a dead process or a reused pid', async () => {
    const image = join(dir(), 'b.img');
    await writeFile(image, 'x');
    const first = await acquireImageLock(image, lockDir());
    const lockPath = first.path;
    // a dead holder
    await writeFile(lockPath, JSON.stringify({ pid: await deadPid(), start: '1', token: 't', image }));
    const l2 = await acquireImageLock(image, lockDir());
    // the old handle must not remove the new holder's lock
    await first.release();
    await expect(acquireImageLock(image, lockDir())).rejects.toMatchObject({ code: 'IMAGE_BUSY' });
    await l2.release();
    // a live pid with another start time: pid reuse
    await writeFile(
      lockPath,
      JSON.stringify({ pid: process.pid, start: 'not-the-start', token: 't', image }),
    );
    const l3 = await acquireImageLock(image, lockDir());
    await l3.release();
  });

  it('treats a fresh unreadable lock as busy, an old one as abandoned', async () => {
    const image = join(dir(), 'c.img');
    await writeFile(image, 'x');
    const l = await acquireImageLock(image, lockDir());
    await l.release();
    await writeFile(l.path, '');
    await expect(acquireImageLock(image, lockDir())).rejects.toMatchObject({ code: 'IMAGE_BUSY' });
    const { utimes } = await import('node:fs/promises');
    await utimes(l.path, new Date(0), new Date(0));
    const l2 = await acquireImageLock(image, lockDir());
    await l2.release();
  });

  it('reads process start times', async () => {
    expect(await processStartTime(process.pid)).toMatch(/^\d+$/);
    expect(await processStartTime(await deadPid())).toBeNull();
  });

  it('fails with FILE_NOT_FOUND for a missing image', async () => {
    await expect(acquireImageLock(join(dir(), 'missing'), lockDir())).rejects.toMatchObject({
      code: 'FILE_NOT_FOUND',
    });
  });
});
