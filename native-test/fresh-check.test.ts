// scripts/fresh-check refuses while atrest is in use; it runs here from a copy whose base list holds every
// installed package, so even a broken refusal could not purge this machine or remove this checkout's files.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeAtrestEnv, must, ROOT, run, type AtrestEnv } from './helpers/cli.js';

let t: AtrestEnv;
let script: string;
let base: string;

beforeAll(async () => {
  t = await makeAtrestEnv('atrest-fresh-');
  const copy = join(t.dir, 'checkout');
  await mkdir(join(copy, 'scripts'), { recursive: true });
  script = join(copy, 'scripts', 'fresh-check');
  await copyFile(join(ROOT, 'scripts', 'fresh-check'), script);
  base = join(t.dir, 'base.txt');
  const installed = await must('dpkg-query', ['-W', '-f=${Package}\\n']);
  await writeFile(base, installed.stdout);
});

afterAll(async () => {
  await t.cleanup();
});

describe('scripts/fresh-check', () => {
  it('refuses while an atrest volume is served, naming the mount, and changes nothing', async () => {
    const img = join(t.dir, 'a.img');
    const key = join(t.dir, 'key');
    await writeFile(key, 'fresh-check test passphrase', { mode: 0o600 });
    const fast = ['--key-file', key, '--pbkdf-force-iterations', '1000'];
    expect((await t.atrest(['format', img, '--size', '8M', ...fast])).code).toBe(0);
    expect((await t.atrest(['open', img, 'busy', '--key-file', key])).code).toBe(0);
    const r = await run('bash', [script, '--base', base], { env: t.env, timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('refusing: atrest is in use');
    expect(r.stderr).toContain(join(t.runDir, 'busy'));
    expect(r.stderr).toMatch(/atrest daemon, pid \d+/);
    expect(r.stdout).not.toContain('machine is fresh');
    expect((await t.atrest(['close', 'busy'])).code).toBe(0);
    expect((await t.atrest(['daemon', '--stop'])).code).toBe(0);
  });

  it('--dry-run prints the plan and changes nothing', async () => {
    const r = await must('bash', [script, '--dry-run', '--base', base], { env: t.env, timeoutMs: 60_000 });
    expect(r.stdout).toContain('Debian packages to purge: none');
    expect(r.stdout).toContain('dry run: nothing changed');
  });
});
