// atrest as systemd runs it: the unit verifies, the daemon speaks sd_notify to a real NOTIFY_SOCKET,
// opens configured volumes, reloads on SIGHUP, stops cleanly on SIGTERM; VM disk tools on the disk file.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, makeAtrestEnv, must, ROOT, run, waitForExit, type AtrestEnv } from './helpers/cli.js';

const MiB = 1024 * 1024;
let t: AtrestEnv;
const children: ChildProcess[] = [];

beforeEach(async () => {
  t = await makeAtrestEnv('atrest-service-');
});
afterEach(async () => {
  // a daemon left running by a failed test stops cleanly first: a SIGKILLed one leaves loop devices on
  // a dead FUSE file, which make every later `sync` hang
  for (const c of children.splice(0)) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    c.kill('SIGTERM');
    if (!(await waitForExit(c.pid ?? 0, 20_000))) c.kill('SIGKILL');
  }
  await t.cleanup();
});

/** A NOTIFY_SOCKET listener (a unix datagram socket, via python3): every message, in order. */
function notifyListener(path: string): { messages: string[]; wait(re: RegExp, ms: number): Promise<string> } {
  const py = spawn(
    'python3',
    [
      '-u',
      '-c',
      'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("LISTENING",flush=True)\nwhile True:\n  print(s.recv(65536).decode().replace("\\n","|"),flush=True)',
      path,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(py);
  const messages: string[] = [];
  let buf = '';
  py.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      messages.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  return {
    messages,
    async wait(re: RegExp, ms: number): Promise<string> {
      const end = Date.now() + ms;
      for (;;) {
        const m = messages.find((x) => re.test(x));
        if (m !== undefined) return m;
        if (Date.now() > end)
          throw new Error(`no notify message matching ${re} in ${ms} ms: ${messages.join(' / ')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

interface Status {
  name: string;
  state: string;
  error?: string;
  diskPath: string;
  loopDevice: string | null;
  mountPoint: string | null;
}

async function status(): Promise<Status[]> {
  const r = await t.atrest(['status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { volumes: Status[] }).volumes;
}

function startDaemon(config: string, env: NodeJS.ProcessEnv): ChildProcess {
  const d = spawn(process.execPath, [BIN, 'daemon', '--config', config], {
    env,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(d);
  return d;
}

describe('systemd service', () => {
  it('the installed unit passes systemd-analyze verify', async () => {
    const root = join(t.dir, 'root');
    await must('bash', [join(ROOT, 'scripts', 'install'), '--root', root]);
    const unit = join(root, 'etc', 'systemd', 'system', 'atrest.service');
    // verify also runs `man atrest(8)` for the unit's Documentation=: the page installed under root
    await must('systemd-analyze', ['verify', unit], {
      env: { ...process.env, MANPATH: join(root, 'usr', 'local', 'share', 'man') },
    });
    expect(await readFile(unit, 'utf8')).toMatch(/^Type=notify$/m);
    expect((await stat(join(root, 'etc', 'atrest', 'volumes.json'))).mode & 0o777).toBe(0o600);
  });

  it('READY=1 once configured volumes are served; SIGHUP reloads; SIGTERM flushes and stops with STOPPING=1', async () => {
    const key = join(t.dir, 'key');
    await writeFile(key, randomBytes(32), { mode: 0o600 });
    const a = join(t.dir, 'a.img');
    const b = join(t.dir, 'b.img');
    expect((await t.atrest(['format', a, '--size', '16M'])).code).toBe(0);
    expect(
      (await t.atrest(['format', b, '--size', '16M', '--key-file', key, '--pbkdf-force-iterations', '1000']))
        .code,
    ).toBe(0);
    const config = join(t.dir, 'volumes.json');
    const vol = (name: string, image: string, extra: object = {}): object => ({ name, image, ...extra });
    await writeFile(
      config,
      JSON.stringify({ volumes: [vol('a', a, { loop: true }), vol('gone', join(t.dir, 'missing.img'))] }),
    );
    const sock = join(t.dir, 'notify.sock');
    const listener = notifyListener(sock);
    await listener.wait(/LISTENING/, 10_000);
    const env = { ...t.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '2000000', ATREST_KEY_CHECK_INTERVAL: '1' };
    const d = startDaemon(config, env);
    await listener.wait(/READY=1/, 30_000);
    // at READY, every configured volume is served or has failed with its reason
    let st = await status();
    expect(st.map((v) => [v.name, v.state])).toEqual([
      ['a', 'served'],
      ['gone', 'failed'],
    ]);
    expect(st[1]?.error).toMatch(/does not exist/);
    expect(st[0]?.loopDevice).toMatch(/^\/dev\/loop/);
    expect(listener.messages.some((m) => /STATUS=opening 2 configured volume/.test(m))).toBe(true);
    await listener.wait(/WATCHDOG=1/, 5_000);

    // SIGHUP: b added, gone removed, a untouched
    const diskA = st[0]?.diskPath ?? '';
    const data = randomBytes(MiB);
    const fh = await open(diskA, 'r+');
    await fh.write(data, 0, data.length, 0);
    await fh.sync();
    await fh.close();
    await writeFile(
      config,
      JSON.stringify({ volumes: [vol('a', a, { loop: true }), vol('b', b, { key: { keyFile: key } })] }),
    );
    d.kill('SIGHUP');
    const reloaded = async (): Promise<boolean> =>
      (await status()).map((v) => `${v.name}:${v.state}`).join() === 'a:served,b:served';
    for (let i = 0; i < 100 && !(await reloaded()); i++) await new Promise((r) => setTimeout(r, 100));
    st = await status();
    expect(st.map((v) => `${v.name}:${v.state}`)).toEqual(['a:served', 'b:served']);

    // SIGTERM during a fio --verify write load and a writer that fsyncs each write: everything fsynced
    // survives (a complete fio write+verify of [4M, 8M) before; fio's load on [8M, 16M) when it arrives)
    const fioCommon = [
      `--filename=${diskA}`,
      '--ioengine=libaio',
      '--direct=1',
      '--bs=4k',
      '--iodepth=8',
      '--verify=crc32c',
      '--verify_state_save=0',
    ];
    await must(
      'fio',
      [
        '--name=r1',
        ...fioCommon,
        '--rw=randwrite',
        '--offset=4M',
        '--size=4M',
        '--fsync_on_close=1',
        '--do_verify=1',
      ],
      {
        timeoutMs: 120_000,
      },
    );
    const load = run(
      'fio',
      [
        '--name=r2',
        ...fioCommon,
        '--rw=randwrite',
        '--offset=8M',
        '--size=8M',
        '--time_based',
        '--runtime=60',
        '--fsync=16',
      ],
      {
        timeoutMs: 120_000,
      },
    );
    // per position: the last fsynced data, and what was written there after it (may or may not land)
    const written = new Map<number, { synced: Buffer | null; after: Buffer[] }>();
    let fsynced = 0;
    let stop = false;
    const writer = (async (): Promise<void> => {
      const w = await open(diskA, 'r+');
      try {
        for (let i = 0; !stop && i < 2000; i++) {
          const pos = MiB + (i % 256) * 4096;
          const chunk = randomBytes(4096);
          const slot = written.get(pos) ?? { synced: null, after: [] };
          written.set(pos, slot);
          slot.after.push(chunk);
          await w.write(chunk, 0, 4096, pos);
          await w.sync();
          slot.synced = chunk;
          slot.after = [];
          fsynced++;
        }
      } catch {
        // the disk file goes away under us: expected
      } finally {
        await w.close().catch(() => undefined);
      }
    })();
    await new Promise((r) => setTimeout(r, 700));
    d.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => d.on('exit', (c) => r(c)));
    stop = true;
    await writer;
    await load; // fails once the disk file is gone, as it must
    expect(code).toBe(0);
    await listener.wait(/STOPPING=1/, 5_000);
    expect(fsynced).toBeGreaterThan(0);
    expect((await run('sh', ['-c', `grep -c ' ${t.dir}/' /proc/mounts || true`])).stdout.trim()).toBe('0');
    expect((await run('losetup', ['-j', diskA])).stdout.trim()).toBe('');

    // restart: the fsynced writes are there
    const d2 = startDaemon(config, { ...env, NOTIFY_SOCKET: '' });
    for (let i = 0; i < 100 && !(await status().catch(() => [])).some((v) => v.name === 'a'); i++)
      await new Promise((r) => setTimeout(r, 100));
    const back = await readFile(diskA);
    expect(back.subarray(0, MiB).equals(data)).toBe(true);
    for (const [pos, slot] of written) {
      const got = back.subarray(pos, pos + 4096);
      const ok = [...(slot.synced ? [slot.synced] : []), ...slot.after].some((c) => got.equals(c));
      // unless nothing there was ever fsynced and no write landed: then the old contents stay
      expect(ok || slot.synced === null, `write at ${pos}`).toBe(true);
    }
    const verify = await run(
      'fio',
      ['--name=r1', ...fioCommon, '--rw=randwrite', '--offset=4M', '--size=4M', '--verify_only'],
      {
        timeoutMs: 120_000,
      },
    );
    expect(verify.code, verify.stderr + verify.stdout).toBe(0);
    d2.kill('SIGTERM');
    await waitForExit(d2.pid ?? 0, 30_000);
  });

  it('a bad configuration: one line per problem, non-zero exit, no image touched', async () => {
    const img = join(t.dir, 'c.img');
    expect((await t.atrest(['format', img, '--size', '8M'])).code).toBe(0);
    const before = await readFile(img);
    const config = join(t.dir, 'bad.json');
    await writeFile(
      config,
      JSON.stringify({
        volumes: [
          { name: 'ok', image: img },
          { name: 'ok', image: 'relative.img' },
          { name: 'x', image: '/abs/x.img', key: { vault: 'y' }, mount: { path: '/mnt/x' } },
        ],
      }),
    );
    const r = await run(process.execPath, [BIN, 'daemon', '--config', config], {
      env: t.env,
      timeoutMs: 30_000,
    });
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/^atrest: configuration .* has 4 problem/);
    expect(lines.slice(1).map((l) => l.replace(/^.*?\.json: /, '').replace(/; fix them.*$/, ''))).toEqual([
      'volumes[1].name: "ok" is also volumes[0].name',
      'volumes[1].image: must be an absolute path',
      'volumes[2].key: must be "platform", { "kek": "NAME" } or { "keyFile": "/path" }',
      'volumes[2].mount: needs "loop": true',
    ]);
    expect((await readFile(img)).equals(before)).toBe(true);
    expect((await t.atrest(['config', 'check', config])).code).toBe(2);
  });
});

describe('configured mount points', () => {
  it('the daemon mounts the filesystem on the loop device at start and unmounts it on SIGTERM', async () => {
    const img = join(t.dir, 'm.img');
    expect((await t.atrest(['format', img, '--size', '64M'])).code).toBe(0);
    const r = await t.atrest(['open', img, 'm', '--loop']);
    expect(r.code, r.stderr).toBe(0);
    await must('mkfs.ext4', ['-q', r.stdout.trim().split('\n')[1] ?? '']);
    expect((await t.atrest(['close', 'm'])).code).toBe(0);
    await t.atrest(['daemon', '--stop']);
    const mnt = join(t.dir, 'mnt');
    const config = join(t.dir, 'volumes.json');
    await writeFile(
      config,
      JSON.stringify({
        volumes: [{ name: 'm', image: img, loop: true, mount: { path: mnt, options: 'noatime' } }],
      }),
    );
    const start = async (): Promise<ChildProcess> => {
      const d = startDaemon(config, t.env);
      for (let i = 0; i < 200; i++) {
        const st = await status().catch(() => []);
        if (st.some((v) => v.name === 'm' && v.mountPoint === mnt)) return d;
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error('the configured filesystem was not mounted');
    };
    let d = await start();
    const human = await t.atrest(['status', 'm']);
    expect(human.stdout).toMatch(/mounted on\s+\S*mnt/);
    await writeFile(join(mnt, 'hello.txt'), 'written through the mounted volume\n');
    await must('sync', []);
    d.kill('SIGTERM');
    expect(await new Promise<number | null>((res) => d.on('exit', (c) => res(c)))).toBe(0);
    expect((await readFile('/proc/mounts', 'utf8')).includes(` ${mnt} `)).toBe(false);
    d = await start();
    expect(await readFile(join(mnt, 'hello.txt'), 'utf8')).toBe('written through the mounted volume\n');
    d.kill('SIGTERM');
    expect(await new Promise<number | null>((res) => d.on('exit', (c) => res(c)))).toBe(0);
  });
});

describe("the unit's sandbox", () => {
  it('FUSE, loop and mounts work, seen by the host, in its mount namespace, capabilities and devices', async () => {
    const unit = await readFile(join(ROOT, 'systemd', 'atrest.service'), 'utf8');
    const setting = (k: string): string[] =>
      [...unit.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => (m[1] ?? '').trim());
    expect(setting('NoNewPrivileges')).toEqual(['yes']);
    expect(setting('DevicePolicy')).toEqual(['closed']);
    const caps = (setting('CapabilityBoundingSet')[0] ?? '')
      .split(/\s+/)
      .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`);
    // DevicePolicy=closed: the standard pseudo devices, plus the unit's DeviceAllow= (emulated with a
    // cgroup v1 devices controller, as systemd does on such hosts)
    const majors: Record<string, string> = {
      '/dev/fuse': 'c 10:229',
      '/dev/loop-control': 'c 10:237',
      'block-loop': 'b 7:*',
      'block-blkext': 'b 259:*',
    };
    const allow = ['c 1:3 rwm', 'c 1:5 rwm', 'c 1:7 rwm', 'c 1:8 rwm', 'c 1:9 rwm'];
    for (const d of setting('DeviceAllow')) {
      const [dev = '', mode = 'rw'] = d.split(/\s+/);
      const m = majors[dev];
      if (m === undefined) throw new Error(`test does not know DeviceAllow=${d}`);
      allow.push(`${m} ${mode}`);
    }
    const cg = `/sys/fs/cgroup/devices/atrest-sandbox-${process.pid}`;
    await must('mkdir', ['-p', cg]);
    try {
      await writeFile(join(cg, 'devices.deny'), 'a');
      for (const a of allow) await writeFile(join(cg, 'devices.allow'), a);
      // a formatted volume with ext4, configured with a loop device and a mount point
      const img = join(t.dir, 's.img');
      expect((await t.atrest(['format', img, '--size', '64M'])).code).toBe(0);
      const r = await t.atrest(['open', img, 's', '--loop']);
      await must('mkfs.ext4', ['-q', r.stdout.trim().split('\n')[1] ?? '']);
      expect((await t.atrest(['close', 's'])).code).toBe(0);
      await t.atrest(['daemon', '--stop']);
      const mnt = join(t.dir, 'smnt');
      const config = join(t.dir, 'volumes.json');
      await writeFile(
        config,
        JSON.stringify({ volumes: [{ name: 's', image: img, loop: true, mount: { path: mnt } }] }),
      );
      // systemd's root is a shared mount (emulated for the test directory); the unit's ProtectSystem=
      // and PrivateTmp= put the daemon in a slave mount namespace with a read-only /usr, and
      // BindReadOnlyPaths= puts libexec/fusermount-host over /usr/bin/fusermount
      await must('mount', ['--bind', t.dir, t.dir]);
      sharedDir = t.dir;
      await must('mount', ['--make-shared', t.dir]);
      expect(setting('BindReadOnlyPaths')[0]).toMatch(/libexec\/fusermount-host:\/usr\/bin\/fusermount$/);
      const wrapper = join(ROOT, 'libexec', 'fusermount-host');
      const inner =
        `mount --bind /usr /usr && mount -o remount,ro,bind /usr && ` +
        `mount --bind ${wrapper} /usr/bin/fusermount && exec setpriv --no-new-privs --inh-caps=-all ` +
        `--bounding-set=-all,${caps.join(',')} ${process.execPath} ${BIN} daemon --config ${config}`;
      const d = spawn(
        'sh',
        [
          '-c',
          `echo $$ > ${cg}/cgroup.procs && umask 077 && exec unshare --mount --propagation slave sh -c "$0"`,
          inner,
        ],
        {
          env: { ...t.env, ATREST_HOST_MNT_NS: `/proc/${process.pid}/ns/mnt` },
          stdio: ['ignore', 'ignore', 'inherit'],
        },
      );
      children.push(d);
      let st: Status[] = [];
      for (let i = 0; i < 200; i++) {
        st = await status().catch(() => []);
        if (st.some((v) => v.name === 's' && (v.mountPoint === mnt || v.state === 'failed'))) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      expect(st.map((v) => [v.name, v.state, v.error ?? '', v.mountPoint])).toEqual([
        ['s', 'served', '', mnt],
      ]);
      // the host (this process) sees the disk file and the filesystem, not just the daemon
      const hostMounts = await readFile('/proc/self/mounts', 'utf8');
      expect(hostMounts).toContain(` ${join(t.env.ATREST_RUN_DIR ?? '', 's')} fuse.atrest `);
      expect(hostMounts).toContain(` ${mnt} ext4 `);
      await writeFile(join(mnt, 'f.txt'), 'inside the sandbox\n');
      await must('sync', []);
      d.kill('SIGTERM');
      expect(await new Promise<number | null>((res) => d.on('exit', (c) => res(c)))).toBe(0);
      expect((await readFile('/proc/mounts', 'utf8')).includes(` ${mnt} `)).toBe(false);
    } finally {
      // the fusermount auto_unmount watcher may still be leaving the cgroup: retry for a while
      for (let i = 0; i < 50 && (await run('rmdir', [cg])).code !== 0; i++) {
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  });
  let sharedDir: string | null = null;
  afterEach(async () => {
    if (sharedDir !== null) await run('umount', ['-l', sharedDir]);
    sharedDir = null;
  });
});

describe('VM disk backing', () => {
  it('qemu-img info, qemu-io O_DIRECT patterns, and qemu-img convert of a qcow2 into the disk file', async () => {
    const img = join(t.dir, 'vm.img');
    expect((await t.atrest(['format', img, '--size', '64M'])).code).toBe(0);
    const r = await t.atrest(['open', img, 'vm']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    const info = await must('qemu-img', ['info', '--output=json', '-f', 'raw', disk]);
    expect((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size']).toBe(64 * MiB);
    await must('qemu-io', ['-f', 'raw', '-t', 'none', '-c', 'write -P 0x5c 0 8M', disk]);
    const rd = await must('qemu-io', ['-f', 'raw', '-t', 'none', '-c', 'read -P 0x5c 0 8M', disk]);
    expect(rd.stdout).not.toMatch(/Pattern verification failed/);
    // a qcow2 with data, converted into the encrypted disk
    const q = join(t.dir, 'src.qcow2');
    await must('qemu-img', ['create', '-f', 'qcow2', q, '64M']);
    await must('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa7 16M 4M', '-c', 'write -P 0x3d 60M 1M', q]);
    await must('qemu-img', ['convert', '-n', '-f', 'qcow2', '-O', 'raw', '-t', 'none', q, disk]);
    await must('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', q, disk]);
    const c = await must('qemu-io', [
      '-f',
      'raw',
      '-t',
      'none',
      '-c',
      'read -P 0xa7 16M 4M',
      '-c',
      'read -P 0x3d 60M 1M',
      disk,
    ]);
    expect(c.stdout).not.toMatch(/Pattern verification failed/);
    expect((await t.atrest(['close', 'vm'])).code).toBe(0);
    expect((await readFile(img)).includes(Buffer.alloc(4096, 0xa7))).toBe(false);
  });
});
