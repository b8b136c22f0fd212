// The FUSE kernel backend on a real mount: the file as today's, byte-exact I/O, 1 MiB async requests, INTERRUPT, unmount under load, 7.31, loop+ext4, clean exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fuseMountAt, mounts } from '../src/fuse/index.js';
import { useTempDir } from '../src/test-helpers/temp-dir.test-helper.js';
import { sh, shOk } from './helpers/fuse.js';
import { Gate, newGate } from './helpers/gated-disk-io.js';
import { serveKernelTestDisk, type KernelTestDisk } from './helpers/kernel-disk.js';

const GATED = new URL('./helpers/gated-disk-io.ts', import.meta.url).href;
const MiB = 1024 * 1024;

const dir = useTempDir('atrest-kfuse-');
const served: KernelTestDisk[] = [];
const children: ChildProcess[] = [];
const fsMounts: string[] = [];

async function serve(opts: Parameters<typeof serveKernelTestDisk>[1] = {}): Promise<KernelTestDisk> {
  const d = await serveKernelTestDisk(dir(), opts);
  served.push(d);
  return d;
}

function start(cmd: string, args: string[]): ChildProcess & { done: Promise<number | string> } {
  const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(c);
  const done = new Promise<number | string>((r) => c.on('close', (code, sig) => r(code ?? sig ?? -1)));
  return Object.assign(c, { done });
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const m of fsMounts.splice(0)) await sh(`umount -l ${m}`, 30_000);
  for (const d of served.splice(0)) {
    // whatever a test left: open the gate, detach loop devices on the disk file, then unmount
    const gate = (d.descriptor as { gate?: Int32Array }).gate;
    if (gate) Atomics.store(gate, Gate.CLOSED, 0);
    await sh(`losetup -j ${d.diskPath} -O NAME -n | xargs -r -n1 losetup -d`, 30_000);
    await d.close();
  }
});

describe('FUSE kernel backend', () => {
  it('shows the disk as today: fuse.atrest, source atrest, regular file 0600 of the volume size; dd round trips byte-exact', async () => {
    const d = await serve({ size: 32 * MiB });
    expect(d.disk.backend).toBe('kernel');
    const st = await stat(d.diskPath);
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(32 * MiB);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(process.getuid?.());
    const m = (await mounts()).find((e) => e.mountPoint === d.diskPath);
    expect(m).toMatchObject({ fsType: 'fuse.atrest', source: 'atrest', minor: d.disk.connection });
    expect(d.disk.stats().minor).toBe(Math.min(45, d.disk.stats().kernelMinor));

    const src = join(dir(), 'src');
    await shOk(`head -c 5000000 /dev/urandom > ${src}`);
    await shOk(`dd if=${src} of=${d.diskPath} bs=1M conv=notrunc status=none`);
    await shOk(`cmp -n 5000000 ${src} ${d.diskPath}`);
    await shOk(
      `dd if=${src} of=${d.diskPath} bs=777 seek=12345 oflag=seek_bytes conv=notrunc count=50 status=none`,
    );
    await shOk(`cmp -n 38850 ${src} <(tail -c +12346 ${d.diskPath})`);
    // what reached the image is the same bytes at dataOffset (placeholder passthrough)
    await shOk(`cmp -n 12345 ${src} <(tail -c +${d.dataOffset + 1} ${d.image})`);
    // same-size truncate and touch pass; resizing and chmod are refused
    await shOk(`truncate -s ${32 * MiB} ${d.diskPath} && touch ${d.diskPath}`);
    expect((await sh(`truncate -s 1M ${d.diskPath}`)).code).not.toBe(0);
    expect((await sh(`chmod 644 ${d.diskPath}`)).code).not.toBe(0);
    expect((await stat(d.diskPath)).size).toBe(32 * MiB);
    // spawned helpers do not inherit /dev/fuse
    expect(await shOk('ls -l /proc/self/fd/')).not.toMatch(/\/dev\/fuse/);

    await d.close();
    expect(await fuseMountAt(d.diskPath)).toBeNull();
    expect(d.disk.stats()).toMatchObject({ workers: 0, closedBy: 'umount' });
    await expect(stat(d.diskPath)).rejects.toThrow(/ENOENT/);
    await d.close(); // idempotent
  });

  it('gets 1 MiB requests, many in flight at once, and passes fio crc32c verify (4k qd32, 1M qd16, direct)', async () => {
    const d = await serve({ size: 48 * MiB });
    await shOk(`dd if=/dev/zero of=${d.diskPath} bs=1M count=8 oflag=direct conv=notrunc status=none`);
    await shOk(`dd if=${d.diskPath} of=/dev/null bs=1M count=8 iflag=direct status=none`);
    expect(d.disk.stats().maxWrite).toBe(MiB);
    expect(d.disk.stats().maxRead).toBe(MiB);
    const common = `--filename=${d.diskPath} --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse`;
    await shOk(`fio --name=r4k --rw=randwrite --bs=4k --iodepth=32 --size=16M ${common}`, 120_000);
    await shOk(`fio --name=s1m --rw=write --bs=1M --iodepth=16 --size=48M ${common}`, 120_000);
    const s = d.disk.stats();
    expect(s.maxInFlight).toBeGreaterThan(1); // async direct I/O: requests served in parallel
    expect(s.protocolErrors).toBe(0);
    expect(s.syncs).toBeGreaterThan(0); // FLUSH after writes reached fdatasync
  });

  it('answers a signalled read that is blocked in the disk late, without hanging; other requests go on meanwhile', async () => {
    const gate = newGate(16 * MiB);
    const d = await serve({ size: 32 * MiB, extra: { gate }, diskIoModule: GATED });
    await shOk(`dd if=/dev/urandom of=${d.diskPath} bs=1M count=32 conv=notrunc status=none`);
    Atomics.store(gate, Gate.CLOSED, 1);
    for (const signal of ['SIGINT', 'SIGKILL'] as const) {
      const before = d.disk.stats().interrupts;
      // a buffered read of a direct_io file is a synchronous, interruptible request
      const reader = start('dd', [`if=${d.diskPath}`, 'of=/dev/null', 'bs=4096', 'count=1', 'skip=5000']);
      await until('the read to block in the disk', () => Atomics.load(gate, Gate.BLOCKED) >= 1);
      reader.kill(signal);
      if (signal === 'SIGINT') await until('INTERRUPT', () => d.disk.stats().interrupts > before);
      // the other workers keep serving
      await shOk(`dd if=${d.diskPath} of=/dev/null bs=4096 count=4 status=none`);
      expect(reader.exitCode).toBeNull(); // still waiting for its (late) reply
      Atomics.store(gate, Gate.CLOSED, 0);
      Atomics.notify(gate, Gate.CLOSED);
      expect(await reader.done).toBe(signal);
      await until('the worker to return', () => Atomics.load(gate, Gate.BLOCKED) === 0);
      Atomics.store(gate, Gate.CLOSED, 1);
    }
    Atomics.store(gate, Gate.CLOSED, 0);
    await shOk(`dd if=${d.diskPath} of=/dev/null bs=1M status=none`);
  });

  it('dropKeys reaches every idle worker, and is bounded while one is stuck', async () => {
    const gate = newGate(0);
    const d = await serve({ size: 8 * MiB, workers: 3, extra: { gate }, diskIoModule: GATED });
    expect(await d.disk.dropKeys(10_000)).toBe(true);
    Atomics.store(gate, Gate.CLOSED, 1);
    const reader = start('dd', [`if=${d.diskPath}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct']);
    await until('the read to block', () => Atomics.load(gate, Gate.BLOCKED) >= 1);
    const t0 = Date.now();
    expect(await d.disk.dropKeys(1_500)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(10_000);
    Atomics.store(gate, Gate.CLOSED, 0);
    Atomics.notify(gate, Gate.CLOSED);
    expect(await reader.done).toBe(0);
    expect(await d.disk.dropKeys(10_000)).toBe(true);
  });

  it('closes while fio has requests in flight: no hung process, every worker exits', async () => {
    const d = await serve({ size: 32 * MiB, unmountTimeoutMs: 3_000 });
    const fio = start('fio', [
      '--name=load',
      `--filename=${d.diskPath}`,
      '--rw=randrw',
      '--bs=4k',
      '--ioengine=libaio',
      '--iodepth=16',
      '--direct=1',
      '--time_based',
      '--runtime=60',
      '--size=32M',
    ]);
    await until('fio to run', () => (d.disk.stats().ops.WRITE ?? 0) > 200);
    const t0 = Date.now();
    await d.close();
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(d.disk.stats().workers).toBe(0);
    // fio keeps the file open: umount is refused, the lazy unmount leaves the connection to fio,
    // so only aborting our connection ends the requests
    expect(d.disk.stats().closedBy).toBe('abort');
    expect(await fuseMountAt(d.diskPath)).toBeNull();
    const code = await Promise.race([fio.done, new Promise((r) => setTimeout(() => r('hung'), 15_000))]);
    expect(code).not.toBe('hung');
  });

  it('aborts its connection when the last serving thread dies on its own: requests fail, nothing hangs', async () => {
    const gate = newGate(0);
    const d = await serve({ size: 4 * MiB, workers: 1, extra: { gate }, diskIoModule: GATED });
    Atomics.store(gate, Gate.DIE, 1);
    const r = await sh(`dd if=${d.diskPath} of=/dev/null bs=4096 count=1 iflag=direct status=none`, 30_000);
    expect(r.timedOut).toBe(false);
    expect(r.code).not.toBe(0);
    expect(d.disk.stats().workers).toBe(0);
    await d.close();
    expect(await fuseMountAt(d.diskPath)).toBeNull();
  });

  it('works at a forced lower protocol minor (7.31): dd and fio verify', async () => {
    await expect(serve({ size: MiB, maxMinor: 30 })).rejects.toThrow(/from 31 to 45/);
    const d = await serve({ size: 16 * MiB, maxMinor: 31 });
    expect(d.disk.stats().minor).toBe(31);
    const src = join(dir(), 'src31');
    await shOk(`head -c 3000000 /dev/urandom > ${src}`);
    await shOk(`dd if=${src} of=${d.diskPath} bs=64k oflag=direct conv=notrunc status=none iflag=fullblock`);
    await shOk(`cmp -n 3000000 ${src} ${d.diskPath}`);
    await shOk(
      `fio --name=v31 --filename=${d.diskPath} --rw=randwrite --bs=4k --iodepth=16 --size=8M --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse`,
      120_000,
    );
  });

  it('carries ext4 on a direct-I/O loop device; fsck is clean after remount', async () => {
    const d = await serve({ size: 64 * MiB });
    const loop = (await shOk(`losetup --find --show --direct-io=on --sector-size 4096 ${d.diskPath}`)).trim();
    const mnt = join(dir(), 'ext4');
    await shOk(`mkdir -p ${mnt} && mkfs.ext4 -q -F ${loop}`);
    await shOk(`mount ${loop} ${mnt}`);
    fsMounts.push(mnt);
    await shOk(`for i in $(seq 1 60); do head -c $((i * 3000)) /dev/urandom > ${mnt}/f$i; done; sync`);
    const sums = await shOk(`cd ${mnt} && md5sum f* | sort`);
    await shOk(`umount ${mnt}`);
    fsMounts.pop();
    await shOk(`mount ${loop} ${mnt}`);
    fsMounts.push(mnt);
    expect(await shOk(`cd ${mnt} && md5sum f* | sort`)).toBe(sums);
    await shOk(`umount ${mnt}`);
    fsMounts.pop();
    await shOk(`e2fsck -fn ${loop}`);
    await shOk(`losetup -d ${loop}`);
  });

  it('refuses writes on a read-only disk', async () => {
    const d = await serve({ size: 4 * MiB, readOnly: true });
    const r = await sh(`dd if=/dev/zero of=${d.diskPath} bs=4k count=1 conv=notrunc status=none`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/read-only/i);
    await shOk(`dd if=${d.diskPath} of=/dev/null bs=1M status=none`);
  });

  it('lets the Node process exit by itself after close()', async () => {
    const child = resolve(import.meta.dirname, 'helpers', 'kernel-exit-child.ts');
    const r = await sh(
      `cd ${resolve(import.meta.dirname, '..')} && timeout -s KILL 60 node --import tsx ${child}`,
      90_000,
    );
    expect(r.stdout + r.stderr).toContain('closed workers=0');
    expect(r.code).toBe(0);
  });
});
