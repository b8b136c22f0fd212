// In-place encryption end to end: SIGKILL at chosen instants then resume, online conversion under fio,
// cryptsetup on the result, bad input (run as root).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, makeAtrestEnv, must, run, waitForExit, type AtrestEnv } from './helpers/cli.js';
import { decryptSector, dumpVolumeKey } from './helpers/cryptsetup.js';
import { expectOneLineError, sha256 as sha } from './helpers/disk.js';

const MiB = 1024 * 1024;
let t: AtrestEnv;

beforeEach(async () => {
  t = await makeAtrestEnv('atrest-convert-');
});
afterEach(async () => {
  await t.cleanup();
});

/** A plaintext image: random data after a structured first block, as real disk images have. */
async function plainImage(size: number, name = 'p.img'): Promise<{ path: string; data: Buffer }> {
  const path = join(t.dir, name);
  const data = randomBytes(size);
  data.fill(0, 0, Math.min(size, 4096));
  data.write('ATREST TEST IMAGE: not random at the start, like an MBR, GPT or superblock', 0);
  await writeFile(path, data);
  return { path, data };
}

async function keyFile(): Promise<string> {
  const p = join(t.dir, 'key');
  await writeFile(p, randomBytes(32), { mode: 0o600 });
  return p;
}

/** The decrypted view, read through atrest (open, read the disk file, close). */
async function decryptedView(image: string, args: string[] = []): Promise<Buffer> {
  const r = await t.atrest(['open', image, 'view', ...args]);
  expect(r.code, r.stderr).toBe(0);
  try {
    return await readFile(r.stdout.trim());
  } finally {
    expect((await t.atrest(['close', 'view'])).code).toBe(0);
  }
}

describe('atrest encrypt: SIGKILL at chosen instants, then resume', () => {
  // attached header (datashift) and detached header (checksum) each at their own points
  const attached: Array<[string, number]> = [
    ['after-grow', 1],
    ['before-data-write', 1],
    ['mid-data-write', 1],
    ['after-data-write', 1],
    ['after-data-sync', 1],
    ['record-written', 1],
    ['after-checkpoint', 1],
    ['mid-data-write', 2],
    ['after-data-sync', 3],
    ['record-written', 3],
    ['header-copied', 1],
    ['header-synced', 1],
    ['unmarked', 1],
    ['sidecar-removed', 1],
  ];
  const detached: Array<[string, number]> = [
    ['sums-written', 1],
    ['record-written', 1],
    ['after-arm', 2],
    ['mid-data-write', 2],
    ['after-data-write', 1],
    ['after-data-sync', 2],
    ['record-written', 4],
    ['after-final-record', 1],
    ['unmarked', 1],
  ];
  const cases = [
    ...attached.map(([p, n]) => ({ header: false, point: p, nth: n })),
    ...detached.map(([p, n]) => ({ header: true, point: p, nth: n })),
  ];

  it(`${cases.length} kill points: each resumes to the exact original; the result is standard LUKS2`, async () => {
    const key = await keyFile();
    const failures: string[] = [];
    for (const [i, c] of cases.entries()) {
      const { path, data } = await plainImage(3 * 8 * MiB + 3 * 4096, `k${i}.img`);
      const hdrArgs = c.header ? ['--header', join(t.dir, `k${i}.hdr`)] : [];
      const args = ['encrypt', path, '--key-file', key, '--iter-time', '10', ...hdrArgs];
      const env = { ...t.env, ATREST_TEST_KILL_AT: `${c.point}:${c.nth}` };
      const r1 = await run(process.execPath, [BIN, ...args], {
        env,
        timeoutMs: 60_000,
      });
      if (r1.code !== 137 && r1.code !== 128)
        failures.push(`${c.point}#${c.nth}: not killed (exit ${r1.code})`);
      // cryptsetup must refuse an image under conversion: no LUKS header in the image (attached), or
      // one whose unmet requirement makes it refuse changes and activation (detached)
      const marked = !['unmarked', 'sidecar-removed'].includes(c.point);
      if (marked && !c.header && (await run('cryptsetup', ['isLuks', path])).code === 0) {
        const dump = await run('cryptsetup', ['luksDump', path]);
        if (!/Requirements:\s+atrest-convert-v1/.test(dump.stdout)) {
          failures.push(`${c.point}#${c.nth}: the image looks like plain LUKS while being converted`);
        }
      }
      if (marked && c.header) {
        const dump = await run('cryptsetup', ['luksDump', '--header', hdrArgs[1] ?? '', path]);
        const cfg = await run('cryptsetup', ['config', '--label', 'x', '--header', hdrArgs[1] ?? '', path]);
        if (!/Requirements:\s+atrest-convert-v1/.test(dump.stdout) || cfg.code === 0) {
          failures.push(`${c.point}#${c.nth}: cryptsetup does not see the conversion mark`);
        }
      }
      const r2 = await t.atrest(args);
      expect(r2.code, `${c.point}#${c.nth}: ${r2.stderr}`).toBe(0);
      const got = await decryptedView(path, ['--key-file', key, ...hdrArgs]);
      if (sha(got) !== sha(data)) failures.push(`${c.point}#${c.nth}: decrypted view differs`);
    }
    expect(failures).toEqual([]);
    // the last result: cryptsetup reads it and its data decrypts with the dumped volume key
    const last = cases.length - 1;
    const img = join(t.dir, `k${last}.img`);
    const hdr = join(t.dir, `k${last}.hdr`);
    await must('cryptsetup', ['luksDump', '--header', hdr, img]);
    await must('cryptsetup', ['open', '--test-passphrase', '--key-file', key, '--header', hdr, img]);
    const a0 = join(t.dir, 'k0.img');
    await must('cryptsetup', ['luksDump', a0]);
    await must('cryptsetup', ['open', '--test-passphrase', '--key-file', key, a0]);
    const vk = await dumpVolumeKey(t.dir, a0, key);
    const fh = await open(a0, 'r');
    const ct = Buffer.alloc(4096);
    await fh.read(ct, 0, 4096, 16 * MiB + 8 * MiB);
    await fh.close();
    const view0 = await decryptedView(a0, ['--key-file', key]);
    expect(decryptSector(vk, ct, (8 * MiB) / 512).equals(view0.subarray(8 * MiB, 8 * MiB + 4096))).toBe(true);
  });
});

describe('online conversion', () => {
  it('open encrypts a plaintext image while fio --verify writes through the disk file', async () => {
    const size = 64 * MiB;
    const { path, data } = await plainImage(size);
    let r = await t.atrest(['open', path, 'on', '--encrypt', '--max-rate', '8M']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    // slow the conversion so fio runs while it is under way
    expect((await t.atrest(['encrypt', '--pause', 'on'])).code).toBe(0);
    r = await t.atrest(['status', 'on', '--json']);
    const conv = (
      JSON.parse(r.stdout) as { volumes: Array<{ conversion: { state: string; total: number } }> }
    ).volumes[0]?.conversion;
    expect(conv).toMatchObject({ state: 'paused', total: size });
    expect((await t.atrest(['encrypt', '--resume', 'on'])).code).toBe(0);
    const fioJob = [
      '--name=conv',
      `--filename=${disk}`,
      '--ioengine=libaio',
      '--direct=1',
      '--iodepth=8',
      '--rw=randwrite',
      '--bs=4k',
      '--offset=24M',
      '--size=16M',
      '--verify=crc32c',
      '--verify_fatal=1',
      '--verify_state_save=0',
    ];
    const fio = await run('fio', [...fioJob, '--do_verify=1'], { timeoutMs: 180_000 });
    expect(fio.code, fio.stderr + fio.stdout).toBe(0);
    // wait for the end of the conversion
    for (let i = 0; i < 600; i++) {
      r = await t.atrest(['status', 'on', '--json']);
      const s = (JSON.parse(r.stdout) as { volumes: Array<{ conversion?: { state: string } }> }).volumes[0];
      if (s?.conversion?.state === 'done') break;
      await new Promise((res) => setTimeout(res, 200));
    }
    const after = await readFile(disk);
    expect(sha(after.subarray(0, 24 * MiB))).toBe(sha(data.subarray(0, 24 * MiB)));
    expect(sha(after.subarray(40 * MiB))).toBe(sha(data.subarray(40 * MiB)));
    // fio's own region verifies after the conversion too
    const verify = await run('fio', [...fioJob, '--verify_only'], { timeoutMs: 120_000 });
    expect(verify.code, verify.stderr + verify.stdout).toBe(0);
    expect((await t.atrest(['close', 'on'])).code).toBe(0);
    expect((await stat(path)).size).toBe(size + 16 * MiB);
    const raw = await readFile(path);
    expect(raw.includes(data.subarray(0, 4096))).toBe(false);
    const again = await decryptedView(path);
    expect(sha(again)).toBe(sha(after));
  });

  it('under continuous light foreground I/O the conversion still finishes (no starvation), byte-exact', async () => {
    const size = 64 * MiB;
    const { path, data } = await plainImage(size);
    const r = await t.atrest(['open', path, 'lt', '--encrypt']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    // an idle volume converts 64 MiB in about a second: the daemon is held (SIGSTOP) until the load is
    // queued, so conversion and load start together
    const pid = Number((await readFile(join(t.dir, 'state', 'daemon.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGSTOP');
    const progress = async (): Promise<{ state: string; done: number }> => {
      const s = await t.atrest(['status', 'lt', '--json']);
      const v = (JSON.parse(s.stdout) as { volumes: Array<{ conversion?: { state: string; done: number } }> })
        .volumes[0];
      return { state: v?.conversion?.state ?? '', done: v?.conversion?.done ?? -1 };
    };
    // light and never-ending: random 4k reads everywhere, random 4k writes of a fixed pattern in [8M, 12M)
    const common = ['--ioengine=libaio', '--direct=1', '--bs=4k', '--time_based', '--runtime=120'];
    const load = spawn(
      'fio',
      [
        `--filename=${disk}`,
        ...common,
        '--name=reads',
        '--rw=randread',
        '--iodepth=2',
        '--rate_iops=300',
        '--name=writes',
        '--rw=randwrite',
        '--iodepth=1',
        '--rate_iops=100',
        '--offset=8M',
        '--size=4M',
        '--buffer_pattern=0x5a',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    load.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    load.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const fioDone = new Promise<void>((res) => load.on('close', () => res()));
    let state = '';
    try {
      await new Promise((res) => setTimeout(res, 500));
      process.kill(pid, 'SIGCONT');
      await new Promise((res) => setTimeout(res, 1000));
      expect(load.exitCode).toBeNull();
      // the load is up and most of the conversion is still to do
      const early = await progress();
      expect(early.state).toBe('running');
      expect(size - early.done).toBeGreaterThanOrEqual(16 * MiB);
      // the load keeps going while the conversion runs; it must finish anyway, well before fio does
      const t0 = Date.now();
      while (Date.now() - t0 < 90_000) {
        state = (await progress()).state;
        if (state === 'done') break;
        expect(load.exitCode, 'the foreground load ran for the whole conversion').toBeNull();
        await new Promise((res) => setTimeout(res, 250));
      }
    } finally {
      process.kill(pid, 'SIGCONT');
      load.kill('SIGTERM');
    }
    await fioDone;
    // stopped by SIGTERM: fio reports each job; no I/O error in any
    expect(out, out).toMatch(/reads: \(groupid=0, jobs=1\): err= 0/);
    expect(out, out).toMatch(/writes: \(groupid=0, jobs=1\): err= 0/);
    expect(state).toBe('done');
    // every 4k block of the written region is its original or the pattern; the rest is the original
    const check = (view: Buffer): void => {
      expect(sha(view.subarray(0, 8 * MiB))).toBe(sha(data.subarray(0, 8 * MiB)));
      expect(sha(view.subarray(12 * MiB))).toBe(sha(data.subarray(12 * MiB)));
      const pattern = Buffer.alloc(4096, 0x5a);
      let written = 0;
      for (let at = 8 * MiB; at < 12 * MiB; at += 4096) {
        const block = view.subarray(at, at + 4096);
        if (block.equals(pattern)) written++;
        else expect(block.equals(data.subarray(at, at + 4096)), `block at ${at}`).toBe(true);
      }
      expect(written).toBeGreaterThan(0);
    };
    const after = await readFile(disk);
    check(after);
    expect((await t.atrest(['close', 'lt'])).code).toBe(0);
    const again = await decryptedView(path);
    expect(sha(again)).toBe(sha(after));
  });

  it('a daemon killed mid-conversion resumes on the next open', async () => {
    const { path, data } = await plainImage(48 * MiB);
    let r = await t.atrest(['open', path, 'dk', '--encrypt']);
    expect(r.code, r.stderr).toBe(0);
    await new Promise((res) => setTimeout(res, 300));
    const pid = Number((await readFile(join(t.dir, 'state', 'daemon.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
    await waitForExit(pid, 10_000);
    r = await t.atrest(['open', path, 'dk']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    expect(sha(await readFile(disk))).toBe(sha(data));
    expect((await t.atrest(['close', 'dk'])).code).toBe(0);
    expect(sha(await decryptedView(path))).toBe(sha(data));
  });
});

describe('open never encrypts unless asked', () => {
  it('a plaintext image, or a detached-header volume opened without --header, is refused and left as it is', async () => {
    const { path, data } = await plainImage(8 * MiB);
    let r = await t.atrest(['open', path, 'pl']);
    expectOneLineError(
      r,
      5,
      /is not a LUKS2 image: either .*--header.* or it is plaintext; .*--header FILE.*open --encrypt IMAGE NAME/,
    );
    expect(sha(await readFile(path))).toBe(sha(data));
    await expect(stat(`${path}.atrest-convert.hdr`)).rejects.toMatchObject({ code: 'ENOENT' });

    // cryptsetup leaves the data area of a detached-header volume as it was: zeros here, so nothing
    // about the image says it is encrypted
    const img = join(t.dir, 'd.img');
    const hdr = join(t.dir, 'd.hdr');
    const key = await keyFile();
    await writeFile(img, Buffer.alloc(8 * MiB));
    await must('cryptsetup', [
      'luksFormat',
      '--batch-mode',
      '--type',
      'luks2',
      '--pbkdf',
      'pbkdf2',
      '--pbkdf-force-iterations',
      '1000',
      '--key-file',
      key,
      '--header',
      hdr,
      img,
    ]);
    const before = sha(await readFile(img));
    r = await t.atrest(['open', img, 'dh', '--key-file', key]);
    expectOneLineError(
      r,
      5,
      /d\.img is not a LUKS2 image: either its header is detached and --header was not given/,
    );
    expect(sha(await readFile(img))).toBe(before);
    await expect(stat(`${img}.atrest-convert.hdr`)).rejects.toMatchObject({ code: 'ENOENT' });
    r = await t.atrest(['open', img, 'dh', '--key-file', key, '--header', hdr]);
    expect(r.code, r.stderr).toBe(0);
    expect((await t.atrest(['close', 'dh'])).code).toBe(0);
    expect(sha(await readFile(img))).toBe(before);

    // --encrypt does not go with --header (a detached header is made by atrest encrypt)
    expectOneLineError(await t.atrest(['open', path, 'pl', '--encrypt', '--header', hdr]), 2, /--encrypt/);
    // asked: encrypted in place
    r = await t.atrest(['open', path, 'pl', '--encrypt']);
    expect(r.code, r.stderr).toBe(0);
    expect((await t.atrest(['close', 'pl'])).code).toBe(0);
    expect(sha(await decryptedView(path))).toBe(sha(data));
  });
});

describe('atrest encrypt: bad input, image unchanged', () => {
  it('already LUKS2, size not whole sectors, open elsewhere, read-only file, not enough space', async () => {
    const key = await keyFile();
    const luks = join(t.dir, 'l.img');
    expect(
      (
        await t.atrest([
          'format',
          luks,
          '--size',
          '8M',
          '--key-file',
          key,
          '--pbkdf-force-iterations',
          '1000',
        ])
      ).code,
    ).toBe(0);
    expectOneLineError(await t.atrest(['encrypt', luks, '--key-file', key]), 2, /already .*LUKS.*reencrypt/);

    const odd = await plainImage(4096 + 1024, 'odd.img');
    expectOneLineError(
      await t.atrest(['encrypt', odd.path]),
      2,
      /not a whole number of 4096-byte sectors.*--sector-size 1024/,
    );
    expect(sha(await readFile(odd.path))).toBe(sha(odd.data));

    const busy = await plainImage(4 * MiB, 'busy.img');
    expect((await t.atrest(['open', busy.path, 'busy', '--key-file', key, '--encrypt'])).code).toBe(0);
    expectOneLineError(await t.atrest(['encrypt', busy.path, '--key-file', key]), 7, /busy|in use|open/i);
    expect((await t.atrest(['close', 'busy'])).code).toBe(0);

    // a small tmpfs: not enough space for the header; then read-only
    const mnt = join(t.dir, 'small');
    await must('mkdir', ['-p', mnt]);
    await must('mount', ['-t', 'tmpfs', '-o', 'size=12M', 'tmpfs', mnt]);
    try {
      const img = join(mnt, 's.img');
      const d = randomBytes(4 * MiB);
      await writeFile(img, d);
      expectOneLineError(await t.atrest(['encrypt', img, '--key-file', key]), 4, /not enough free space/);
      expect(sha(await readFile(img))).toBe(sha(d));
      await must('mount', ['-o', 'remount,ro', mnt]);
      expectOneLineError(await t.atrest(['encrypt', img, '--key-file', key]), 4, /read-only/);
      expect(sha(await readFile(img))).toBe(sha(d));
    } finally {
      await run('umount', ['-l', mnt]);
    }
  });
});

describe('atrest reencrypt', () => {
  it('SIGKILL at chosen instants then resume: same data under a new key, key slots by the same methods', async () => {
    const base = join(t.dir, 'base.img');
    expect((await t.atrest(['format', base, '--size', '24M'])).code).toBe(0);
    let r = await t.atrest(['key', 'add-recovery', base, '--iter-time', '10']);
    expect(r.code, r.stderr).toBe(0);
    const rec = join(t.dir, 'rec');
    await writeFile(rec, r.stdout.trim(), { mode: 0o600 });
    r = await t.atrest(['open', base, 'base']);
    expect(r.code, r.stderr).toBe(0);
    const data = randomBytes(24 * MiB);
    const fh = await open(r.stdout.trim(), 'r+');
    await fh.write(data, 0, data.length, 0);
    await fh.sync();
    await fh.close();
    expect((await t.atrest(['close', 'base'])).code).toBe(0);
    const oldKey = await dumpVolumeKey(t.dir, base, rec);
    const points = [
      'reencrypt-area-zeroed:1',
      'reencrypt-switched:1',
      'sums-written:1',
      'after-arm:2',
      'mid-data-write:2',
      'after-data-sync:1',
      'record-written:3',
      'after-final-record:1',
      'sums-wiped:1',
      'unmarked:1',
    ];
    const failures: string[] = [];
    for (const [i, point] of points.entries()) {
      const img = join(t.dir, `r${i}.img`);
      await must('cp', [base, img]);
      const args = ['reencrypt', img, '--key-file', rec, '--iter-time', '10'];
      const r1 = await run(process.execPath, [BIN, ...args], {
        env: { ...t.env, ATREST_TEST_KILL_AT: point },
        timeoutMs: 60_000,
      });
      if (r1.code !== 137 && r1.code !== 128)
        failures.push(`${point}: not killed (exit ${r1.code}) ${r1.stderr}`);
      const r2 = await t.atrest(args);
      // after the last step that matters (unmark), a rerun would start a second reencryption: fine too
      if (r2.code !== 0) failures.push(`${point}: resume failed: ${r2.stderr}`);
      if (sha(await decryptedView(img)) !== sha(data)) failures.push(`${point}: data differs`);
      await must('cryptsetup', ['open', '--test-passphrase', '--key-file', rec, img]);
      const newKey = await dumpVolumeKey(t.dir, img, rec);
      if (newKey.equals(oldKey)) failures.push(`${point}: still the old volume key`);
      const kinds = JSON.parse((await t.atrest(['key', 'list', img, '--json'])).stdout) as {
        keyslots: Array<{ kind: string }>;
      };
      if (kinds.keyslots.map((k) => k.kind).join(',') !== 'platform,recovery') {
        failures.push(`${point}: key slots ${kinds.keyslots.map((k) => k.kind).join(',')}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('online: reencrypt NAME while fio --verify writes; a passphrase slot without its key file is refused', async () => {
    const key = await keyFile();
    const img = join(t.dir, 'on.img');
    expect(
      (
        await t.atrest([
          'format',
          img,
          '--size',
          '48M',
          '--key-file',
          key,
          '--pbkdf-force-iterations',
          '1000',
        ])
      ).code,
    ).toBe(0);
    // no key file for the passphrase slot: refused, image unchanged
    const before = sha(await readFile(img));
    expectOneLineError(await t.atrest(['reencrypt', img]), 6, /no key slot matches|not bound/);
    expect(sha(await readFile(img))).toBe(before);
    let r = await t.atrest(['open', img, 'on', '--key-file', key]);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    const fioArgs = [
      '--name=re',
      `--filename=${disk}`,
      '--ioengine=libaio',
      '--direct=1',
      '--iodepth=8',
      '--rw=randwrite',
      '--bs=4k',
      '--size=48M',
      '--verify=crc32c',
      '--verify_fatal=1',
      '--verify_state_save=0',
    ];
    const fio = run('fio', [...fioArgs, '--do_verify=1'], { timeoutMs: 180_000 });
    await new Promise((res) => setTimeout(res, 500));
    r = await t.atrest(['reencrypt', 'on', '--key-file', key, '--max-rate', '16M']);
    expect(r.code, r.stderr).toBe(0);
    const f = await fio;
    expect(f.code, f.stderr + f.stdout).toBe(0);
    for (let i = 0; i < 600; i++) {
      r = await t.atrest(['status', 'on', '--json']);
      const s = (JSON.parse(r.stdout) as { volumes: Array<{ conversion?: { state: string } }> }).volumes[0];
      if (s?.conversion?.state === 'done') break;
      await new Promise((res) => setTimeout(res, 200));
    }
    const v = await run('fio', [...fioArgs, '--verify_only'], { timeoutMs: 120_000 });
    expect(v.code, v.stderr + v.stdout).toBe(0);
    expect((await t.atrest(['close', 'on'])).code).toBe(0);
    await must('cryptsetup', ['open', '--test-passphrase', '--key-file', key, img]);
    r = await t.atrest(['open', img, 'on', '--key-file', key]);
    expect(r.code, r.stderr).toBe(0);
    const again = await run(
      'fio',
      [
        ...fioArgs.map((x) => (x.startsWith('--filename') ? `--filename=${r.stdout.trim()}` : x)),
        '--verify_only',
      ],
      {
        timeoutMs: 120_000,
      },
    );
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect((await t.atrest(['close', 'on'])).code).toBe(0);
  });
});
