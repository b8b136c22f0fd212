// End to end through the real CLI, daemon, FUSE, loop devices, ext4 and cryptsetup (run as root).
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, makeAtrestEnv, must, run, waitForExit, type AtrestEnv } from './helpers/cli.js';
import { decryptRange, dumpVolumeKey } from './helpers/cryptsetup.js';
import { readDisk, sha256File, writeDisk } from './helpers/disk.js';

const FAST = ['--pbkdf-force-iterations', '1000'];
let t: AtrestEnv;

beforeEach(async () => {
  t = await makeAtrestEnv();
});
afterEach(async () => {
  await t.cleanup();
});

async function keyFile(name = 'key'): Promise<string> {
  const p = join(t.dir, name);
  await writeFile(p, randomBytes(48), { mode: 0o600 });
  return p;
}

describe('format, open, use, close', () => {
  it('serves a volume that takes a loop device, ext4, files, and stays fsck-clean after reopen', async () => {
    const key = await keyFile();
    const img = join(t.dir, 'vol.img');
    let r = await t.atrest(['format', img, '--size', '96M', '--key-file', key, '--label', 'e2e', ...FAST]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect((await stat(img)).size).toBe(16 * 2 ** 20 + 96 * 2 ** 20);

    r = await t.atrest(['open', img, 'vol', '--key-file', key, '--loop']);
    expect(r.code, r.stderr).toBe(0);
    const [diskPath, loopDev] = r.stdout.trim().split('\n');
    expect(diskPath).toBe(join(t.runDir, 'vol'));
    expect(loopDev).toMatch(/^\/dev\/loop\d+$/);
    expect((await stat(diskPath!)).size).toBe(96 * 2 ** 20);

    const st = await t.atrest(['status', 'vol', '--json']);
    const status = JSON.parse(st.stdout) as { volumes: Array<Record<string, unknown>> };
    expect(status.volumes[0]).toMatchObject({
      name: 'vol',
      image: img,
      cipher: 'aes-xts-plain64',
      sectorSize: 4096,
      size: 96 * 2 ** 20,
      readOnly: false,
      loopDevice: loopDev,
    });
    const human = await t.atrest(['status']);
    expect(human.stdout).toContain('aes-xts-plain64');

    const mnt = join(t.dir, 'mnt');
    await mkdir(mnt);
    await must('mkfs.ext4', ['-q', loopDev!]);
    await must('mount', [loopDev!, mnt]);
    const payload = randomBytes(3 * 2 ** 20);
    await writeFile(join(mnt, 'payload.bin'), payload);
    await writeFile(join(mnt, 'note.txt'), 'ATREST-E2E-PLAINTEXT '.repeat(500));
    await must('umount', [mnt]);
    r = await t.atrest(['close', 'vol']);
    expect(r.code, r.stderr).toBe(0);
    await expect(stat(diskPath!)).rejects.toThrow();

    // No plaintext reached the image.
    const raw = await readFile(img);
    expect(raw.includes(Buffer.from('ATREST-E2E-PLAINTEXT'))).toBe(false);
    expect(raw.includes(payload.subarray(0, 64))).toBe(false);

    r = await t.atrest(['open', img, 'vol', '--key-file', key, '--loop']);
    expect(r.code, r.stderr).toBe(0);
    const loop2 = r.stdout.trim().split('\n')[1]!;
    const fsck = await run('fsck.ext4', ['-n', '-f', loop2]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    await must('mount', [loop2, mnt]);
    expect((await readFile(join(mnt, 'payload.bin'))).equals(payload)).toBe(true);
    await must('umount', [mnt]);

    // Closing while the loop device is mounted is refused with a clear message.
    await must('mount', [loop2, mnt]);
    r = await t.atrest(['close', 'vol']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/mounted on .*; unmount it first/);
    await must('umount', [mnt]);
    r = await t.atrest(['close', 'vol']);
    expect(r.code, r.stderr).toBe(0);
  });

  it('leaves no trace of a plaintext pattern in the backing image', async () => {
    const key = await keyFile();
    const img = join(t.dir, 'scan.img');
    expect(
      (await t.atrest(['format', img, '--size', '16M', '--key-file', key, '--sector-size', '512', ...FAST]))
        .code,
    ).toBe(0);
    const r = await t.atrest(['open', img, 'scan', '--key-file', key]);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    const pattern = Buffer.alloc(2 ** 20, 'SECRET-PATTERN-0123456789abcdef');
    await writeDisk(disk, 123, pattern); // unaligned on purpose
    expect((await readDisk(disk, 123, pattern.length)).equals(pattern)).toBe(true);
    expect((await t.atrest(['close', 'scan'])).code).toBe(0);
    const raw = await readFile(img);
    expect(raw.includes(Buffer.from('SECRET-PATTERN'))).toBe(false);
    expect(raw.includes(Buffer.from('0123456789abcdef'))).toBe(false);
  });
});

describe('through the daemon and its crypto worker pool', () => {
  it('passes fio crc32c verification (random 4k and 1M) and qemu-io pattern checks on the disk file', async () => {
    const key = await keyFile();
    const img = join(t.dir, 'fio.img');
    expect((await t.atrest(['format', img, '--size', '48M', '--key-file', key, ...FAST])).code).toBe(0);
    const r = await t.atrest(['open', img, 'fio', '--key-file', key]);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    const common = [
      `--filename=${disk}`,
      '--ioengine=libaio',
      '--direct=1',
      '--iodepth=8',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--verify_state_save=0',
    ];
    await must('fio', ['--name=r4k', '--rw=randwrite', '--bs=4k', '--size=16M', ...common], {
      timeoutMs: 120_000,
    });
    await must('fio', ['--name=s1m', '--rw=write', '--bs=1M', '--size=48M', ...common], {
      timeoutMs: 120_000,
    });
    await must('fio', ['--name=rr1m', '--rw=randrw', '--bs=1M', '--size=48M', ...common], {
      timeoutMs: 120_000,
    });
    for (const cache of ['writeback', 'none']) {
      await must('qemu-io', ['-f', 'raw', '-t', cache, '-c', 'write -P 0xa5 1M 2M', disk]);
      const rd = await must('qemu-io', ['-f', 'raw', '-t', cache, '-c', 'read -P 0xa5 1M 2M', disk]);
      expect(rd.stdout).not.toMatch(/Pattern verification failed/);
    }
    expect((await t.atrest(['close', 'fio'])).code).toBe(0);
    const raw = await readFile(img);
    expect(raw.includes(Buffer.alloc(4096, 0xa5))).toBe(false);
  });
});

describe('interop with cryptsetup', () => {
  for (const sectorSize of [512, 4096]) {
    it(`opens a cryptsetup luksFormat image (sector ${sectorSize}); data decrypts with the dumped key`, async () => {
      const key = await keyFile();
      const img = join(t.dir, `cs${sectorSize}.img`);
      await writeFile(img, '');
      await truncate(img, 32 * 2 ** 20);
      await must('cryptsetup', [
        'luksFormat',
        '--type',
        'luks2',
        '--batch-mode',
        '--sector-size',
        String(sectorSize),
        '--pbkdf-memory',
        '65536',
        '--iter-time',
        '200',
        '--key-file',
        key,
        img,
      ]);
      const r = await t.atrest(['open', img, 'cs', '--key-file', key]);
      expect(r.code, r.stderr).toBe(0);
      const disk = r.stdout.trim();
      expect((await stat(disk)).size).toBe(16 * 2 ** 20);
      const data = randomBytes(256 * 1024);
      await writeDisk(disk, 1 * 2 ** 20, data);
      expect((await t.atrest(['close', 'cs'])).code).toBe(0);
      const vk = await dumpVolumeKey(t.dir, img, key);
      const plain = await decryptRange(img, vk, 16 * 2 ** 20, sectorSize, 1 * 2 ** 20, data.length);
      expect(plain.equals(data)).toBe(true);
    });
  }

  it('makes images that cryptsetup dumps, unlocks, and whose data decrypts with the dumped key', async () => {
    const key = await keyFile();
    for (const detached of [false, true]) {
      const img = join(t.dir, `ours-${detached}.img`);
      const hdr = join(t.dir, `ours-${detached}.hdr`);
      const hdrArgs = detached ? ['--header', hdr] : [];
      const f = await t.atrest(['format', img, '--size', '8M', '--key-file', key, ...hdrArgs, ...FAST]);
      expect(f.code, f.stderr).toBe(0);
      const csTarget = detached ? ['--header', hdr, img] : [img];
      await must('cryptsetup', ['luksDump', ...(detached ? [hdr] : [img])]);
      await must('cryptsetup', ['open', '--test-passphrase', '--key-file', key, ...csTarget]);
      const r = await t.atrest(['open', img, 'ours', '--key-file', key, ...hdrArgs]);
      expect(r.code, r.stderr).toBe(0);
      const data = randomBytes(64 * 1024);
      await writeDisk(r.stdout.trim(), 4096 * 5, data);
      expect((await t.atrest(['close', 'ours'])).code).toBe(0);
      const vk = await dumpVolumeKey(t.dir, detached ? hdr : img, key);
      const off = detached ? 0 : 16 * 2 ** 20;
      expect((await decryptRange(img, vk, off, 4096, 4096 * 5, data.length)).equals(data)).toBe(true);
    }
  });
});

describe('bad input: one-line errors, documented exit codes, image unchanged', () => {
  async function formatted(name: string): Promise<{ img: string; key: string }> {
    const key = await keyFile(`${name}.key`);
    const img = join(t.dir, `${name}.img`);
    const r = await t.atrest(['format', img, '--size', '8M', '--key-file', key, ...FAST]);
    expect(r.code, r.stderr).toBe(0);
    return { img, key };
  }

  function oneLine(stderr: string): void {
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^atrest: /);
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
  }

  it('wrong key', async () => {
    const { img } = await formatted('wk');
    const wrong = await keyFile('wrong');
    const before = await sha256File(img);
    const r = await t.atrest(['open', img, 'wk', '--key-file', wrong]);
    expect(r.code).toBe(6);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/key/i);
    expect(await sha256File(img)).toBe(before);
  });

  it('not a LUKS2 image, truncated image, damaged headers', async () => {
    const key = await keyFile();
    const junk = join(t.dir, 'junk.img');
    await writeFile(junk, randomBytes(1 << 20));
    let r = await t.atrest(['open', junk, 'j', '--key-file', key]);
    expect(r.code).toBe(5);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/not a LUKS2/i);

    const { img, key: k2 } = await formatted('tr');
    await truncate(img, 8 * 2 ** 20); // cut into the data segment's first half
    const before = await sha256File(img);
    r = await t.atrest(['open', img, 'tr', '--key-file', k2]);
    expect(r.code).toBe(5);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/truncated|shorter/i);
    expect(await sha256File(img)).toBe(before);

    const { img: img3, key: k3 } = await formatted('dm');
    const fh = await open(img3, 'r+');
    await fh.write(randomBytes(512), 0, 512, 0); // primary binary header
    await fh.write(randomBytes(512), 0, 512, 16384); // secondary binary header
    await fh.close();
    const before3 = await sha256File(img3);
    r = await t.atrest(['open', img3, 'dm', '--key-file', k3]);
    expect(r.code).toBe(5);
    oneLine(r.stderr);
    expect(await sha256File(img3)).toBe(before3);
  });

  it('opens from the secondary header when the primary is damaged', async () => {
    const { img, key } = await formatted('sec');
    const fh = await open(img, 'r+');
    await fh.write(Buffer.alloc(4096, 0x55), 0, 4096, 0);
    await fh.close();
    const r = await t.atrest(['open', img, 'sec', '--key-file', key, '--read-only']);
    expect(r.code, r.stderr).toBe(0);
    expect((await t.atrest(['close', 'sec'])).code).toBe(0);
  });

  it('image already open, name in use', async () => {
    const { img, key } = await formatted('busy');
    const other = await formatted('other');
    expect((await t.atrest(['open', img, 'busy', '--key-file', key])).code).toBe(0);
    let r = await t.atrest(['open', img, 'busy2', '--key-file', key]);
    expect(r.code).toBe(7);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/already open|in use|busy/i);
    r = await t.atrest(['open', other.img, 'busy', '--key-file', other.key]);
    expect(r.code).toBe(7);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/already open/);
    expect((await t.atrest(['close', 'busy'])).code).toBe(0);
    r = await t.atrest(['close', 'busy']);
    expect(r.code).toBe(8);
    oneLine(r.stderr);
  });

  it('not root, missing /dev/fuse', async () => {
    const { img, key } = await formatted('perm');
    let r = await run(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        ...[BIN, 'open', img, 'p', '--key-file', key],
      ],
      { env: t.env },
    );
    expect(r.code).toBe(3);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/root/);
    r = await run(
      'unshare',
      [
        '--mount',
        'sh',
        '-c',
        'mount -t tmpfs none /dev && exec "$0" "$@"',
        process.execPath,
        BIN,
        'open',
        img,
        'p',
        '--key-file',
        key,
      ],
      { env: t.env },
    );
    expect(r.code).toBe(3);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/\/dev\/fuse/);
  });

  it('refuses to format over an existing file, and bad sizes', async () => {
    const { img, key } = await formatted('exists');
    const before = await sha256File(img);
    let r = await t.atrest(['format', img, '--size', '8M', '--key-file', key, ...FAST]);
    expect(r.code).toBe(4);
    oneLine(r.stderr);
    expect(await sha256File(img)).toBe(before);
    r = await t.atrest(['format', join(t.dir, 'x.img'), '--size', '1000', '--key-file', key, ...FAST]);
    expect(r.code).toBe(2);
    oneLine(r.stderr);
  });
});

describe('crash recovery', () => {
  it('a killed daemon leaves a stale mount that the next open cleans up', async () => {
    const key = await keyFile();
    const img = join(t.dir, 'crash.img');
    expect((await t.atrest(['format', img, '--size', '8M', '--key-file', key, ...FAST])).code).toBe(0);
    expect((await t.atrest(['open', img, 'crash', '--key-file', key])).code).toBe(0);
    const pid = Number((await readFile(join(t.dir, 'state', 'daemon.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
    await waitForExit(pid, 10_000);
    const r = await t.atrest(['open', img, 'crash', '--key-file', key]);
    expect(r.code, r.stderr).toBe(0);
    const data = randomBytes(8192);
    await writeDisk(r.stdout.trim(), 0, data);
    expect((await readDisk(r.stdout.trim(), 0, 8192)).equals(data)).toBe(true);
    expect((await t.atrest(['close', 'crash'])).code).toBe(0);
  });
});
