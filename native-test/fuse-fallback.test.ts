// The libfuse fallback backend, when its optional binding is built: a daemon with --fuse-backend libfuse serves ext4 on a loop device that stays fsck-clean; bad FUSE settings stop the daemon at start.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, makeAtrestEnv, must, ROOT, run, waitForExit, type AtrestEnv } from './helpers/cli.js';

/** Why the fallback cannot be tested here (null: its binding loads). */
function whyNotBuilt(): string | null {
  try {
    createRequire(join(ROOT, 'package.json'))('@cocalc/fuse-native');
    return null;
  } catch (err) {
    return (err as Error).message.split('\n')[0] ?? 'does not load';
  }
}
const notBuilt = whyNotBuilt();
if (notBuilt !== null)
  console.warn(`fuse-fallback: libfuse backend not built, smoke test skipped: ${notBuilt}`);

let t: AtrestEnv;
const children: ChildProcess[] = [];

beforeEach(async () => {
  t = await makeAtrestEnv('atrest-fallback-');
});
afterEach(async () => {
  await t.cleanup();
  for (const c of children.splice(0)) if (c.exitCode === null && c.pid) await waitForExit(c.pid, 10_000);
});

/** Starts `atrest daemon ARGS` and waits for its control socket. */
async function startDaemon(args: string[], env = t.env): Promise<ChildProcess> {
  const d = spawn(process.execPath, [BIN, 'daemon', ...args], {
    env,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(d);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (await stat(join(t.dir, 'state', 'control.sock')).catch(() => null)) return d;
    if (d.exitCode !== null) throw new Error(`the daemon exited ${d.exitCode}`);
    if (Date.now() > deadline) throw new Error('the daemon did not come up in 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('libfuse fallback backend', () => {
  it.skipIf(notBuilt !== null)(
    'serves ext4 on a loop device through --fuse-backend libfuse; fsck-clean after reopen',
    async () => {
      const key = join(t.dir, 'key');
      await writeFile(key, randomBytes(32), { mode: 0o600 });
      const img = join(t.dir, 'fb.img');
      const fast = ['--key-file', key, '--pbkdf-force-iterations', '1000'];
      expect((await t.atrest(['format', img, '--size', '64M', ...fast])).code).toBe(0);
      await startDaemon(['--fuse-backend', 'libfuse']);

      let r = await t.atrest(['open', img, 'fb', '--key-file', key, '--loop']);
      expect(r.code, r.stderr).toBe(0);
      const loop = r.stdout.trim().split('\n')[1] ?? '';
      expect(loop).toMatch(/^\/dev\/loop\d+$/);
      r = await t.atrest(['status', 'fb', '--json']);
      expect(
        (JSON.parse(r.stdout) as { volumes: Array<{ fuseBackend?: string }> }).volumes[0]?.fuseBackend,
      ).toBe('libfuse');
      expect((await t.atrest(['status', 'fb'])).stdout).toMatch(/fuse backend +libfuse/);

      const mnt = join(t.dir, 'mnt');
      await mkdir(mnt);
      await must('mkfs.ext4', ['-q', loop]);
      await must('mount', [loop, mnt]);
      const files = Array.from({ length: 20 }, (_, i) => randomBytes(4096 * (1 + i * 13)));
      for (const [i, f] of files.entries()) await writeFile(join(mnt, `f${i}`), f);
      await must('umount', [mnt]);
      r = await t.atrest(['close', 'fb']);
      expect(r.code, r.stderr).toBe(0);

      r = await t.atrest(['open', img, 'fb', '--key-file', key, '--loop']);
      expect(r.code, r.stderr).toBe(0);
      const loop2 = r.stdout.trim().split('\n')[1] ?? '';
      const fsck = await run('fsck.ext4', ['-f', '-n', loop2], { timeoutMs: 120_000 });
      expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
      await must('mount', ['-o', 'ro', loop2, mnt]);
      for (const [i, f] of files.entries()) expect((await readFile(join(mnt, `f${i}`))).equals(f)).toBe(true);
      await must('umount', [mnt]);
      r = await t.atrest(['close', 'fb']);
      expect(r.code, r.stderr).toBe(0);
    },
    240_000,
  );

  it('a bad FUSE backend or worker count stops the daemon at start with a clear error', async () => {
    let r = await t.atrest(['daemon', '--fuse-backend', 'fuse3'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--fuse-backend: unknown FUSE backend "fuse3": choose kernel or libfuse/);
    r = await run(process.execPath, [BIN, 'daemon'], {
      env: { ...t.env, ATREST_FUSE_WORKERS: '0' },
      timeoutMs: 30_000,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /ATREST_FUSE_WORKERS: the FUSE worker count must be a whole number from 1 to 64/,
    );
    const config = join(t.dir, 'volumes.json');
    await writeFile(config, JSON.stringify({ fuseBackend: 'fuse2', volumes: [] }));
    r = await t.atrest(['daemon', '--config', config], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${config}: fuseBackend: unknown FUSE backend "fuse2"`);
    // `open`, which starts the daemon, checks the environment the daemon will read
    r = await run(process.execPath, [BIN, 'open', join(t.dir, 'none.img'), 'x'], {
      env: { ...t.env, ATREST_FUSE_BACKEND: 'fuse3' },
      timeoutMs: 30_000,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ATREST_FUSE_BACKEND: unknown FUSE backend "fuse3"/);
    // nothing was started
    expect(await stat(join(t.dir, 'state', 'control.sock')).catch(() => null)).toBeNull();
  }, 120_000);
});
