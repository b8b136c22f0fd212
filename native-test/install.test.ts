// scripts/install and scripts/uninstall into a temporary root: every file, the installed command, man page and completion.
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeAtrestEnv, must, ROOT, run, type AtrestEnv } from './helpers/cli.js';

let t: AtrestEnv;
let root: string;
const PREFIX = join('usr', 'local');
const FILES = {
  command: join(PREFIX, 'sbin', 'atrest'),
  man: join(PREFIX, 'share', 'man', 'man8', 'atrest.8'),
  completion: join(PREFIX, 'share', 'bash-completion', 'completions', 'atrest'),
  unit: join('etc', 'systemd', 'system', 'atrest.service'),
};
const MANIFEST = join(PREFIX, 'share', 'atrest', 'installed-files');
const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );
const sha256 = async (p: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

beforeAll(async () => {
  t = await makeAtrestEnv('atrest-install-');
  root = join(t.dir, 'root');
  // what uninstall must never touch: configuration, a key store, an image
  await mkdir(join(root, 'var', 'lib', 'atrest', 'keys'), { recursive: true, mode: 0o700 });
  await writeFile(join(root, 'var', 'lib', 'atrest', 'keys', 'platform-kek.v1'), 'x'.repeat(32), {
    mode: 0o600,
  });
  await mkdir(join(root, 'srv'), { recursive: true });
  await writeFile(join(root, 'srv', 'vm.img'), 'image');
  await must('bash', [join(ROOT, 'scripts', 'install'), '--root', root], { timeoutMs: 300_000 });
}, 320_000);

afterAll(async () => {
  await t.cleanup();
});

describe('scripts/install --root', () => {
  it('writes the command, the manual page, bash completion, the unit and the configuration, and lists them', async () => {
    const manifest = await readFile(join(root, MANIFEST), 'utf8');
    for (const f of Object.values(FILES)) {
      const st = await stat(join(root, f));
      expect(st.isFile(), f).toBe(true);
      expect(st.mode & 0o022, `${f} writable by others`).toBe(0);
      expect(manifest).toContain(`${await sha256(join(root, f))}  /${f}\n`);
    }
    expect((await stat(join(root, FILES.command))).mode & 0o111).toBe(0o111);
    expect((await stat(join(root, 'etc', 'atrest', 'volumes.json'))).mode & 0o777).toBe(0o600);
    expect(manifest).not.toContain('volumes.json');
    expect(await readFile(join(root, FILES.unit), 'utf8')).toContain(`${ROOT}/bin/atrest.js daemon`);
  });

  it('the installed atrest runs: --version and status', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const v = await must(join(root, FILES.command), ['--version'], { env: t.env });
    expect(v.stdout.trim()).toBe(pkg.version);
    const s = await run(join(root, FILES.command), ['status'], { env: t.env });
    expect(s.stderr).toBe('');
    expect(s.code).toBe(0);
  });

  it('man 8 atrest shows every command with its options, exit codes, files, environment and examples', async () => {
    const page = join(root, FILES.man);
    await must('groff', ['-man', '-ww', '-z', page]); // no troff warnings
    const shown = await must('man', ['8', 'atrest'], {
      env: {
        ...process.env,
        MANPATH: join(root, PREFIX, 'share', 'man'),
        MANWIDTH: '120',
        MAN_KEEP_FORMATTING: '',
      },
    });
    const text = shown.stdout; // man-db drops bold/underline when its output is not a terminal
    for (const h of ['SYNOPSIS', 'COMMANDS', 'EXIT STATUS', 'ENVIRONMENT', 'FILES', 'EXAMPLES'])
      expect(text).toContain(h);
    // checked against the CLI's own help: every command's usage line and every option it lists
    const top = (await must(process.execPath, [join(ROOT, 'bin', 'atrest.js'), '--help'], { env: t.env }))
      .stdout;
    const commands = [...top.matchAll(/^ {2}atrest (\S+)/gm)].map((m) => m[1] ?? '');
    expect(commands).toContain('open');
    for (const c of commands.filter((c) => c !== 'completion' && c !== 'key')) {
      const help = (
        await must(process.execPath, [join(ROOT, 'bin', 'atrest.js'), c, '--help'], {
          env: { ...t.env, COLUMNS: '78' },
        })
      ).stdout;
      expect(text, c).toContain(help.split('\n')[0]?.trim() ?? '');
      for (const o of help.matchAll(/^ {2}(--[a-z-]+)/gm)) expect(text, `${c} ${o[1]}`).toContain(o[1] ?? '');
    }
    expect(text).toContain('atrest key add-recovery <image>');
    expect(text).toContain('KEY_UNAVAILABLE');
    expect(text).toContain('ATREST_KEY_STORE');
  });

  it('bash completion offers commands, options and open volume names, and leaves images to file completion', async () => {
    await mkdir(t.runDir, { recursive: true });
    await writeFile(join(t.runDir, 'vm1'), '');
    const complete = async (line: string): Promise<string[]> => {
      const words = line.split(' ');
      const script = [
        `source ${JSON.stringify(join(root, FILES.completion))}`,
        `COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(' ')})`,
        `COMP_CWORD=${words.length - 1}`,
        '_atrest_yargs_completions',
        'printf "%s\\n" "${COMPREPLY[@]}"',
        'complete -p atrest',
      ].join('\n');
      const r = await must('bash', ['-c', script], {
        env: { ...t.env, PATH: `${join(root, PREFIX, 'sbin')}:${process.env.PATH ?? ''}` },
      });
      return r.stdout.split('\n').filter(Boolean);
    };
    const cmds = await complete('atrest clo');
    expect(cmds).toContain('close');
    expect(cmds.at(-1)).toMatch(/-o default .*atrest$/); // empty answers fall back to file names
    expect(await complete('atrest open --rea')).toContain('--read-only');
    expect(await complete('atrest close ')).toContain('vm1');
    expect(await complete('atrest encrypt --pause v')).toContain('vm1');
    expect((await complete('atrest open ')).filter((w) => !w.startsWith('complete '))).toEqual([]);
  });
});

describe('scripts/uninstall --root', () => {
  it('removes exactly what install wrote, keeps a file changed since, and never configuration, keys or images', async () => {
    await writeFile(join(root, FILES.unit), '# edited by the admin\n', { flag: 'a' });
    const out = await must('bash', [join(ROOT, 'scripts', 'uninstall'), '--root', root]);
    for (const f of [FILES.command, FILES.man, FILES.completion, MANIFEST])
      expect(await exists(join(root, f)), f).toBe(false);
    expect(await exists(join(root, FILES.unit))).toBe(true);
    expect(out.stderr).toContain('kept');
    expect(await exists(join(root, 'etc', 'atrest', 'volumes.json'))).toBe(true);
    expect(await exists(join(root, 'var', 'lib', 'atrest', 'keys', 'platform-kek.v1'))).toBe(true);
    expect(await exists(join(root, 'srv', 'vm.img'))).toBe(true);
    // a second run has nothing to do
    expect((await must('bash', [join(ROOT, 'scripts', 'uninstall'), '--root', root])).stdout).toContain(
      'nothing to do',
    );
  });
});
