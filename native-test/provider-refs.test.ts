// An image never makes atrest load a module or open a file it names: tokens name provider references that
// root's providers.json maps; crafted full-URI tokens are refused by every command and the daemon's KEK check.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, makeAtrestEnv, must, run, type AtrestEnv } from './helpers/cli.js';
import { expectOneLineError, readDisk, writeDisk } from './helpers/disk.js';
import { SOFTHSM_MODULE } from './helpers/softhsm.js';

let t: AtrestEnv;
const children: ChildProcess[] = [];
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-refs-');
  t.env.ATREST_KEY_CHECK_INTERVAL = '1';
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  await t.cleanup();
});

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

async function waitFor(fn: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A shared library whose constructor writes `marker`: loading it as root is what must never happen. */
async function evilModule(marker: string): Promise<string> {
  const src = join(t.dir, 'evil.c');
  const so = join(t.dir, 'evil.so');
  await writeFile(
    src,
    `#include <stdio.h>\n__attribute__((constructor)) static void evil(void) {\n` +
      `  FILE *f = fopen(${JSON.stringify(marker)}, "a"); if (f) { fputs("loaded\\n", f); fclose(f); }\n}\n`,
  );
  await must('cc', ['-shared', '-fPIC', '-o', so, src]);
  return so;
}

/**
 * A FIFO that reports being opened: a writer blocks on it until someone opens it for reading, then
 * creates `marker`. Reading a PIN file or KEK file named by an image is what must never happen.
 */
async function openDetector(path: string, marker: string): Promise<void> {
  await must('mkfifo', ['-m', '600', path]);
  const w = spawn('sh', ['-c', `printf 1234 > '${path}' && : > '${marker}'`], { stdio: 'ignore' });
  children.push(w);
}

async function providers(entries: Record<string, Record<string, string>>): Promise<void> {
  await writeFile(join(t.dir, 'providers.json'), JSON.stringify({ providers: entries }), { mode: 0o644 });
}

/** Replaces token 0 of `img` (bound to key slot 0) by an atrest-cmk token naming `kek`. */
async function setToken(
  img: string,
  kek: string,
  wrapAlg: string,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const old = JSON.parse(
    (await must('cryptsetup', ['token', 'export', '--token-id', '0', img])).stdout,
  ) as Record<string, unknown>;
  await must('cryptsetup', ['token', 'remove', '--token-id', '0', img]);
  const token = {
    ...old,
    type: 'atrest-cmk',
    keyslots: ['0'],
    atrest_kek: kek,
    atrest_key_id: 'k',
    atrest_wrap_alg: wrapAlg,
    // a well-formed PKCS#11 blob, so that nothing short of the provider configuration stops the load
    ...(wrapAlg === 'pkcs11-aes256-gcm'
      ? {
          atrest_wrapped: Buffer.concat([Buffer.from('A11G\x01', 'latin1'), randomBytes(60)]).toString(
            'base64',
          ),
        }
      : {}),
    ...extra,
  };
  await must('cryptsetup', ['token', 'import', '--token-id', '0', '--json-file', '-', img], {
    input: JSON.stringify(token),
  });
}

interface Status {
  volumes: Array<{
    name: string;
    state: string;
    error?: string;
    encryption: { kek: string | null; locked: boolean; lockedReason?: string };
  }>;
}

async function status(): Promise<Status> {
  const r = await t.atrest(['status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Status;
}

describe('a crafted image cannot name a module, PIN file or key file', () => {
  it('status, key list, open, key rotate, key use and configured volumes refuse it; nothing is loaded or opened', async () => {
    const marker = join(t.dir, 'LOADED');
    const opened = join(t.dir, 'OPENED');
    const evil = await evilModule(marker);
    const pinFifo = join(t.dir, 'pin.fifo');
    const kekFifo = join(t.dir, 'kek.fifo');
    await openDetector(pinFifo, opened);
    await openDetector(kekFifo, opened);
    const good = join(t.dir, 'good.kek');
    await writeFile(good, randomBytes(32), { mode: 0o600 });
    // the host does configure SoftHSM's module and a key file: the image still cannot name others
    await providers({
      good: { type: 'file', path: good },
      hsm1: { type: 'pkcs11', module: SOFTHSM_MODULE, token: 'atrest', object: 'kek-1' },
    });
    const crafted: Array<[string, string, string]> = [
      ['module', `pkcs11:token=atrest;object=kek-1?module-path=${evil}`, 'pkcs11-aes256-gcm'],
      [
        'pin-source',
        `pkcs11:token=atrest;object=kek-1?module-path=${SOFTHSM_MODULE}&pin-source=${pinFifo}`,
        'pkcs11-aes256-gcm',
      ],
      ['file', `file:${kekFifo}`, 'aes256-kwp'],
    ];
    const cfgVolumes: Array<{ name: string; image: string }> = [];
    for (const [what, uri, alg] of crafted) {
      const img = join(t.dir, `${what}.img`);
      expect((await t.atrest(['format', img, '--size', '8M'])).code).toBe(0);
      await setToken(img, uri, alg);
      cfgVolumes.push({ name: `cfg-${what}`, image: img });

      // header-only commands show what the token says and touch nothing
      let r = await t.atrest(['status', img, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('"keySource": "customer"');
      r = await t.atrest(['key', 'list', img, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toContain(pinFifo);

      const results = [
        await t.atrest(['open', img, `o-${what}`]),
        await t.atrest(['key', 'rotate', img]),
        await t.atrest(['key', 'use', img, '--kek', 'good']),
        await t.atrest(['key', 'add-recovery', img]),
      ];
      expect(await exists(marker), `${what}: module loaded`).toBe(false);
      expect(await exists(opened), `${what}: file opened`).toBe(false);
      for (const res of results)
        expectOneLineError(
          res,
          6,
          /matches no provider in .*providers\.json; atrest never loads a module or opens a file that an image names/,
        );
    }
    // an unknown reference says which file and what entry to add
    const img = join(t.dir, 'ref.img');
    expect((await t.atrest(['format', img, '--size', '8M'])).code).toBe(0);
    await setToken(img, 'ref:hsm9', 'pkcs11-aes256-gcm');
    const r = await t.atrest(['open', img, 'o-ref']);
    expectOneLineError(r, 6, /key provider "hsm9", which is not configured on this host/);
    expect(r.stderr).toContain(`add it to ${join(t.dir, 'providers.json')}: {"providers": {"hsm9": `);

    // configured volumes: the daemon refuses them the same way
    await t.atrest(['daemon', '--stop']);
    const config = join(t.dir, 'volumes.json');
    await writeFile(config, JSON.stringify({ volumes: cfgVolumes }), { mode: 0o600 });
    const d = spawn(process.execPath, [BIN, 'daemon', '--config', config], { env: t.env, stdio: 'ignore' });
    children.push(d);
    await waitFor(
      async () => (await status()).volumes.filter((v) => v.state === 'failed').length === cfgVolumes.length,
      60_000,
      'configured volumes to fail',
    );
    for (const v of (await status()).volumes) expect(v.error).toMatch(/matches no provider/);
    expect(await exists(marker)).toBe(false);
    expect(await exists(opened)).toBe(false);
  });

  it("the daemon's KEK check never loads a module a header names while the volume is open; it locks instead", async () => {
    const marker = join(t.dir, 'LOADED');
    const evil = await evilModule(marker);
    const img = join(t.dir, 'c.img');
    expect((await t.atrest(['format', img, '--size', '8M'])).code).toBe(0);
    const r = await t.atrest(['open', img, 'c']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    await writeDisk(disk, 0, randomBytes(4096));
    // someone with write access to the image file rewrites its token while it is open
    await setToken(img, `pkcs11:token=atrest;object=kek-1?module-path=${evil}`, 'pkcs11-aes256-gcm');
    await waitFor(async () => (await status()).volumes[0]?.encryption.locked === true, 30_000, 'lock');
    expect((await status()).volumes[0]?.encryption.lockedReason).toMatch(
      /key revoked or unavailable: pkcs11:/,
    );
    await expect(readDisk(disk, 0, 4096)).rejects.toMatchObject({ code: 'EIO' });
    await new Promise((res) => setTimeout(res, 3000)); // more check passes
    expect(await exists(marker)).toBe(false);
    expect((await t.atrest(['close', 'c'])).code).toBe(0);
  });
});

describe('configured references', () => {
  it('a file KEK by reference works end to end; a legacy full-URI token opens only while it matches providers.json', async () => {
    const kek = join(t.dir, 'kek-a.key');
    await writeFile(kek, randomBytes(32), { mode: 0o600 });
    await providers({ 'kek-a': { type: 'file', path: kek } });
    const img = join(t.dir, 'f.img');
    let r = await t.atrest(['format', img, '--size', '8M', '--kek', 'kek-a']);
    expect(r.code, r.stderr).toBe(0);
    r = await t.atrest(['key', 'list', img, '--json']);
    expect(r.stdout).toContain('"kek": "ref:kek-a"');
    r = await t.atrest(['open', img, 'f']);
    expect(r.code, r.stderr).toBe(0);
    const data = randomBytes(64 * 1024);
    await writeDisk(r.stdout.trim(), 0, data);
    expect((await status()).volumes[0]?.encryption.kek).toBe('ref:kek-a');
    expect((await t.atrest(['close', 'f'])).code).toBe(0);

    // a token written before references, naming the same key file by URI
    const tok = JSON.parse(
      (await must('cryptsetup', ['token', 'export', '--token-id', '0', img])).stdout,
    ) as {
      atrest_wrap_alg: string;
    };
    await setToken(img, `file:${kek}`, tok.atrest_wrap_alg);
    r = await t.atrest(['open', img, 'f']);
    expect(r.code, r.stderr).toBe(0);
    expect((await readDisk(r.stdout.trim(), 0, data.length)).equals(data)).toBe(true);
    expect((await t.atrest(['close', 'f'])).code).toBe(0);
    // without a matching provider it is refused (the key file is still there); the legacy token is
    // written again first, since the daemon's KEK check may have re-wrapped it to ref:kek-a meanwhile
    await setToken(img, `file:${kek}`, tok.atrest_wrap_alg);
    await providers({ other: { type: 'file', path: join(t.dir, 'other.key') } });
    expectOneLineError(await t.atrest(['open', img, 'f']), 6, /matches no provider/);
    // with it again, `key rotate` rewrites the legacy token to the reference
    await providers({ 'kek-a': { type: 'file', path: kek } });
    r = await t.atrest(['key', 'rotate', img]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/now named ref:kek-a/);
    expect((await t.atrest(['key', 'list', img, '--json'])).stdout).toContain('"kek": "ref:kek-a"');
    // a full URI given by root on the command line is taken only when it resolves to a provider
    expectOneLineError(
      await t.atrest(['key', 'use', img, '--kek', `file:${join(t.dir, 'nope.key')}`]),
      6,
      /--kek .* matches no provider/,
    );
    r = await t.atrest(['key', 'use', img, '--kek', `file:${kek}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/now bound to ref:kek-a/);
  });

  it('refuses a providers.json that others can write, saying how to fix it', async () => {
    const kek = join(t.dir, 'kek-a.key');
    await writeFile(kek, randomBytes(32), { mode: 0o600 });
    await providers({ 'kek-a': { type: 'file', path: kek } });
    const p = join(t.dir, 'providers.json');
    await run('chmod', ['666', p]);
    const r = await t.atrest(['format', join(t.dir, 'x.img'), '--size', '8M', '--kek', 'kek-a']);
    expectOneLineError(r, 2, /refusing provider configuration .* mode 666 lets group or others change it/);
    expect(r.stderr).toContain(`fix with: chmod go-w ${p}`);
    expect(await exists(join(t.dir, 'x.img'))).toBe(false);
  });
});
