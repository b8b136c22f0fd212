// `--key-file -` through the real CLI and daemon: passphrases from standard input and recovery keys cross the control socket as raw bytes.
import { randomBytes } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeAtrestEnv, run, type AtrestEnv } from './helpers/cli.js';
import { readDisk, writeDisk } from './helpers/disk.js';

let t: AtrestEnv;
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-stdin-');
});
afterEach(async () => {
  await t.cleanup();
});

/** A passphrase with a newline, NULs and bytes that are not UTF-8: it must arrive exactly as given. */
function passphrase(): Buffer {
  return Buffer.concat([
    Buffer.from('stdin pass\n'),
    Buffer.from([0, 0xff, 0xfe, 0]),
    randomBytes(24),
    Buffer.from('\n'),
  ]);
}

async function csAccepts(img: string, key: Buffer, name: string): Promise<boolean> {
  const f = join(t.dir, name);
  await writeFile(f, key, { mode: 0o600 });
  return (await run('cryptsetup', ['open', '--test-passphrase', '--key-file', f, img])).code === 0;
}

/** Every file the daemon and CLI wrote (state dir, logs, audit): none may hold the secret in any encoding. */
async function expectNoTrace(secrets: Buffer[]): Promise<void> {
  const files: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory() && p !== t.runDir) await walk(p);
      // (the image itself, and the key files this test gives cryptsetup, are skipped)
      else if (e.isFile() && !p.endsWith('.img') && !/\/(pass|rec)-/.test(p)) files.push(p);
    }
  };
  await walk(t.dir);
  expect(files.length).toBeGreaterThan(0);
  for (const f of files) {
    if ((await stat(f)).size > 64 << 20) continue;
    const content = await readFile(f);
    for (const s of secrets) {
      for (const form of [s, Buffer.from(s.toString('base64')), Buffer.from(s.toString('hex'))]) {
        expect(content.includes(form), `${f} holds a secret`).toBe(false);
      }
    }
  }
}

describe('--key-file - (standard input)', () => {
  it('format, open, key add-recovery and online reencrypt take the passphrase from stdin; recovery keys print exactly', async () => {
    const pass = passphrase();
    const img = join(t.dir, 'in.img');
    let r = await t.atrest(
      [
        'format',
        img,
        '--size',
        '8M',
        '--key-file',
        '-',
        '--pbkdf-force-iterations',
        '1000',
        '--sector-size',
        '512',
      ],
      { input: pass },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await csAccepts(img, pass, 'pass-1')).toBe(true);

    // open through the daemon: the passphrase crosses the socket as raw bytes
    r = await t.atrest(['open', img, 'in', '--key-file', '-'], { input: pass });
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    // the daemon keeps its memory (keys, passphrases) out of core dumps
    const pid = (await readFile(join(t.dir, 'state', 'daemon.pid'), 'utf8')).trim();
    expect(parseInt(await readFile(`/proc/${pid}/coredump_filter`, 'utf8'), 16)).toBe(0);
    const data = randomBytes(256 * 1024);
    await writeDisk(disk, 4096, data);
    expect((await t.atrest(['close', 'in'])).code).toBe(0);
    // a wrong passphrase on stdin is refused as such
    r = await t.atrest(['open', img, 'in', '--key-file', '-'], { input: Buffer.from('wrong') });
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/WRONG_KEY|wrong|no key slot/i);

    // key add-recovery unlocks with stdin and prints the recovery key from its Buffer
    r = await t.atrest(['key', 'add-recovery', img, '--key-file', '-', '--iter-time', '50'], { input: pass });
    expect(r.code, r.stderr).toBe(0);
    const oldRecovery = r.stdout.trim();
    expect(oldRecovery).toMatch(/^([0-9a-z]{5}-){7}[0-9a-z]{5}$/);
    expect(r.stdout).toBe(`${oldRecovery}\n`);
    expect(await csAccepts(img, Buffer.from(oldRecovery), 'rec-old')).toBe(true);

    // online reencrypt: the passphrase slot moves with the stdin passphrase (sent as raw bytes); the
    // recovery slot gets a new recovery key that comes back as raw bytes and is printed once
    r = await t.atrest(['open', img, 'in', '--key-file', '-'], { input: pass });
    expect(r.code, r.stderr).toBe(0);
    r = await t.atrest(['reencrypt', 'in', '--key-file', '-'], { input: pass });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    const newRecovery = lines[0] ?? '';
    expect(newRecovery).toMatch(/^([0-9a-z]{5}-){7}[0-9a-z]{5}$/);
    expect(newRecovery).not.toBe(oldRecovery);
    expect(lines[1]).toMatch(/re-encrypting in under a new volume key/);
    expect(r.stderr).toMatch(/new recovery key/);
    for (let i = 0; i < 600; i++) {
      const s = JSON.parse((await t.atrest(['status', 'in', '--json'])).stdout) as {
        volumes: Array<{ conversion?: { state: string } }>;
      };
      if (s.volumes[0]?.conversion?.state === 'done') break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect((await readDisk(disk, 4096, data.length)).equals(data)).toBe(true);
    expect((await t.atrest(['close', 'in'])).code).toBe(0);
    expect(await csAccepts(img, pass, 'pass-2')).toBe(true);
    expect(await csAccepts(img, Buffer.from(newRecovery), 'rec-new')).toBe(true);
    expect(await csAccepts(img, Buffer.from(oldRecovery), 'rec-old-2')).toBe(false);

    await expectNoTrace([pass, Buffer.from(newRecovery)]);
  }, 400_000);
});
