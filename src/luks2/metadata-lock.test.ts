import { spawn } from 'node:child_process';
import { link, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { metadataLockDir, setMetadataLockDir, withMetadataLock } from './metadata-lock.js';

const dir = useTempDir('atrest-mlock-');
beforeAll(() => {
  setMetadataLockDir(join(dir(), 'locks'));
});
afterAll(() => {
  setMetadataLockDir(null);
});
afterEach(async () => {
  // every lock is released once its holder is done
  const left = await readdir(metadataLockDir()).catch(() => []);
  expect(left.filter((f) => f.endsWith('.meta.lock'))).toEqual([]);
});

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('withMetadataLock', () => {
  it('runs header changes of one header (by any path) one at a time; nested calls re-enter', async () => {
    const header = join(dir(), 'h.img');
    await writeFile(header, 'x');
    const alias = join(dir(), 'h-alias.img');
    await link(header, alias);
    const log: string[] = [];
    const change = (path: string, name: string): Promise<void> =>
      withMetadataLock(path, async () => {
        log.push(`${name} in`);
        await tick(30);
        await withMetadataLock(path, () => Promise.resolve(log.push(`${name} nested`)));
        log.push(`${name} out`);
      });
    await Promise.all([change(header, 'a'), change(alias, 'b'), change(header, 'c')]);
    expect(log).toHaveLength(9);
    for (let i = 0; i < 9; i += 3) {
      const name = (log[i] as string).split(' ')[0];
      expect(log.slice(i, i + 3)).toEqual([`${name} in`, `${name} nested`, `${name} out`]);
    }
  });

  it('waits for a holder, gives up with IMAGE_BUSY after waitMs, and takes over a dead holder', async () => {
    const header = join(dir(), 'w.img');
    await writeFile(header, 'x');
    let release!: () => void;
    const holding = withMetadataLock(header, () => new Promise<void>((r) => (release = r)));
    await tick(20);
    const err = await withMetadataLock(header, () => Promise.resolve('ran'), { waitMs: 200 }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'IMAGE_BUSY' });
    expect(String((err as Error).message)).toContain(String(process.pid));
    const waiting = withMetadataLock(header, () => Promise.resolve('ran'));
    await tick(50);
    release();
    await holding;
    expect(await waiting).toBe('ran');
    // a lock file left by a process that died while holding it
    const child = spawn(process.execPath, ['-e', '0']);
    const pid = child.pid ?? 0;
    await new Promise((r) => child.on('close', r));
    const { stat } = await import('node:fs/promises');
    const st = await stat(header);
    await mkdir(metadataLockDir(), { recursive: true });
    await writeFile(
      join(metadataLockDir(), `${st.dev}-${st.ino}.meta.lock`),
      JSON.stringify({ pid, start: '1', token: 'dead', image: header }),
    );
    expect(await withMetadataLock(header, () => Promise.resolve('took over'), { waitMs: 1000 })).toBe(
      'took over',
    );
  });
});
