// I/O through /run/atrest/NAME vs the raw file on the same filesystem, per FUSE backend: fio, dd, loop + ext4, worker scaling, CPU per GiB.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { run, withPrivateAtrest } from './bench-env.mjs';

const ROOT = resolve(import.meta.dirname, '..');
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const CLK_TCK = 100; // Linux USER_HZ: /proc/PID/stat counts utime/stime in 1/100 s

/**
 * The workloads, in the order they run on one target (block ones first: the ext4 ones then make a
 * filesystem over the same bytes). `bar` is the issue's bar for the kernel backend.
 */
export const WORKLOADS = [
  {
    id: 'seqwrite',
    label: 'seq write 1M qd16',
    kind: 'fio',
    rw: 'write',
    bs: '1M',
    qd: 16,
    unit: 'MB/s',
    bar: 0.6,
  },
  {
    id: 'seqread',
    label: 'seq read 1M qd16',
    kind: 'fio',
    rw: 'read',
    bs: '1M',
    qd: 16,
    unit: 'MB/s',
    bar: 0.6,
  },
  {
    id: 'randwrite',
    label: 'rand write 4k qd32',
    kind: 'fio',
    rw: 'randwrite',
    bs: '4k',
    qd: 32,
    unit: 'IOPS',
    bar: 0.15,
    vsLibfuse: 3,
  },
  {
    id: 'randread',
    label: 'rand read 4k qd32',
    kind: 'fio',
    rw: 'randread',
    bs: '4k',
    qd: 32,
    unit: 'IOPS',
    bar: 0.15,
    vsLibfuse: 3,
  },
  { id: 'ddwrite', label: 'dd 1M direct write qd1', kind: 'dd', rw: 'write', unit: 'MB/s', bar: 0.3 },
  { id: 'ddread', label: 'dd 1M direct read qd1', kind: 'dd', rw: 'read', unit: 'MB/s', bar: 0.3 },
  {
    id: 'ext4write',
    label: 'ext4 seq write 1M qd16',
    kind: 'ext4',
    rw: 'write',
    bs: '1M',
    qd: 16,
    unit: 'MB/s',
    whole: true,
  },
  {
    id: 'ext4read',
    label: 'ext4 seq read 1M qd16',
    kind: 'ext4',
    rw: 'read',
    bs: '1M',
    qd: 16,
    unit: 'MB/s',
  },
  {
    id: 'ext4randwrite',
    label: 'ext4 rand write 4k qd32',
    kind: 'ext4',
    rw: 'randwrite',
    bs: '4k',
    qd: 32,
    unit: 'IOPS',
  },
  {
    id: 'ext4randread',
    label: 'ext4 rand read 4k qd32',
    kind: 'ext4',
    rw: 'randread',
    bs: '4k',
    qd: 32,
    unit: 'IOPS',
  },
];

function sizes(quick) {
  return quick
    ? { seconds: 2, disk: 256 * MiB, dd: 128 * MiB, ext4File: 64 * MiB }
    : { seconds: 5, disk: 1 * GiB, dd: 512 * MiB, ext4File: 256 * MiB };
}

/** fio with libaio and O_DIRECT; time-based unless `whole` (then exactly `size` bytes once). */
async function fio(args, { rw, bs, qd, size, seconds, whole = false }) {
  const { stdout } = await run('fio', [
    '--name=bench',
    ...args,
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--size=${size}`,
    '--ioengine=libaio',
    '--direct=1',
    `--iodepth=${qd}`,
    ...(whole ? [] : ['--time_based', `--runtime=${seconds}`]),
    '--group_reporting',
    '--output-format=json',
  ]);
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  const side = rw.includes('read') ? job.read : job.write;
  return { mbps: side.bw_bytes / 1e6, iops: side.iops, bytes: job.read.io_bytes + job.write.io_bytes };
}

/** dd of `bytes` in 1 MiB O_DIRECT blocks (one request in flight). */
async function dd(file, rw, bytes) {
  const count = String(bytes / MiB);
  const args =
    rw === 'write'
      ? ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${count}`, 'oflag=direct', 'conv=notrunc']
      : [`if=${file}`, 'of=/dev/null', 'bs=1M', `count=${count}`, 'iflag=direct'];
  const { stderr } = await run('dd', args, { env: { ...process.env, LC_ALL: 'C' } });
  const m = /(\d+) bytes .* copied, ([\d.e+-]+) s/.exec(stderr);
  if (!m) throw new Error(`cannot read dd's result: ${stderr.trim()}`);
  const moved = Number(m[1]);
  return { mbps: moved / Number(m[2]) / 1e6, iops: moved / MiB / Number(m[2]), bytes: moved };
}

/** utime + stime of `pid` in seconds. */
async function cpuSeconds(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after "(comm)": state is field 3, utime 14, stime 15
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/**
 * Runs the workloads (`only`: their ids) against `file` (a raw image or a disk file), then the ext4
 * ones on a filesystem made on `loopDev` (mounted at `mnt`). `pid`: the daemon whose CPU is counted.
 */
async function runWorkloads({ file, loopDev, mnt, pid, only, sz, log }) {
  const out = {};
  const cpu0 = async () => (pid ? cpuSeconds(pid) : 0);
  const measure = async (w, fn) => {
    const c0 = await cpu0();
    const r = await fn();
    const c1 = await cpu0();
    out[w.id] = { ...r, cpuPerGiB: pid ? (c1 - c0) / (r.bytes / GiB) : null };
    log(`    ${w.label}: ${w.unit === 'IOPS' ? `${r.iops.toFixed(0)} IOPS` : `${r.mbps.toFixed(0)} MB/s`}`);
  };
  const want = (w) => only === undefined || only.includes(w.id);
  // every byte written once first, so reads are not reads of holes
  await fio([`--filename=${file}`], { rw: 'write', bs: '1M', qd: 16, size: sz.disk, whole: true });
  for (const w of WORKLOADS.filter((x) => x.kind !== 'ext4' && want(x))) {
    if (w.kind === 'dd') await measure(w, () => dd(file, w.rw, sz.dd));
    else await measure(w, () => fio([`--filename=${file}`], { ...w, size: sz.disk, seconds: sz.seconds }));
  }
  const ext4 = WORKLOADS.filter((x) => x.kind === 'ext4' && want(x));
  if (ext4.length === 0 || loopDev === null) return out;
  await run('mkfs.ext4', ['-q', '-F', loopDev]);
  await mkdir(mnt, { recursive: true });
  await run('mount', [loopDev, mnt]);
  try {
    const args = [`--directory=${mnt}`, '--filename=bench.dat'];
    if (!ext4.some((w) => w.whole)) {
      await fio(args, { rw: 'write', bs: '1M', qd: 16, size: sz.ext4File, whole: true });
    }
    for (const w of ext4) {
      await measure(w, () => fio(args, { ...w, size: sz.ext4File, seconds: sz.seconds }));
    }
  } finally {
    await run('umount', [mnt]).catch(() => run('umount', ['-l', mnt]));
  }
  return out;
}

/**
 * The raw file: an image on the same filesystem, and a loop device on it with direct I/O (without it
 * the loop device would read ext4's data back from raw.img's page cache, not from the disk).
 */
async function rawRun(sz, log) {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-bench-raw-'));
  const file = join(dir, 'raw.img');
  let loopDev = null;
  try {
    await writeFile(file, '');
    await truncate(file, sz.disk);
    loopDev = (
      await run('losetup', ['--find', '--show', '--sector-size', '4096', '--direct-io=on', file])
    ).stdout.trim();
    return await runWorkloads({ file, loopDev, mnt: join(dir, 'mnt'), pid: null, sz, log });
  } finally {
    if (loopDev) await run('losetup', ['-d', loopDev]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** An encrypted volume served by `backend` (with `workers`), in a private atrest environment. */
function atrestRun(backend, { workers, only, sz, log }) {
  const extra = {
    ATREST_FUSE_BACKEND: backend,
    ...(workers === undefined ? {} : { ATREST_FUSE_WORKERS: String(workers) }),
  };
  return withPrivateAtrest(`atrest-bench-${backend}-`, { env: extra }, async (dir, env, atrest) => {
    const key = join(dir, 'key');
    await writeFile(key, randomBytes(32), { mode: 0o600 });
    const img = join(dir, 'enc.img');
    await atrest([
      'format',
      img,
      '--size',
      String(sz.disk),
      '--key-file',
      key,
      '--pbkdf-force-iterations',
      '1000',
    ]);
    const { stdout } = await atrest(['open', img, 'enc', '--key-file', key, '--loop']);
    const [file, loopDev] = stdout.trim().split('\n');
    const pid = Number((await readFile(join(env.ATREST_STATE_DIR, 'daemon.pid'), 'utf8')).trim());
    const out = await runWorkloads({
      file,
      loopDev: loopDev ?? null,
      mnt: join(dir, 'mnt'),
      pid,
      only,
      sz,
      log,
    });
    await atrest(['close', 'enc']);
    return out;
  });
}

/** Why the libfuse fallback cannot run here, or null. */
function libfuseMissing() {
  try {
    createRequire(join(ROOT, 'package.json'))('@cocalc/fuse-native');
    return null;
  } catch (err) {
    return String(err.message).split('\n')[0];
  }
}

/** A section that fails soft: { error } instead of throwing. */
async function soft(fn) {
  try {
    return await fn();
  } catch (err) {
    return { error: String(err.message ?? err).split('\n')[0] };
  }
}

/**
 * Measures raw, the kernel backend (its default worker count, then 1, 2 and 4 on a few workloads) and
 * the libfuse fallback, in one run. Returns { raw, kernel, libfuse, scaling: { N: results }, sizes },
 * each results map { workloadId: { mbps, iops, bytes, cpuPerGiB } } or { error }.
 */
export async function benchIo({ quick = false, log = () => undefined } = {}) {
  const sz = sizes(quick);
  const { DEFAULT_FUSE_WORKERS } = await import(join(ROOT, 'dist', 'fuse', 'backend.js'));
  log('  raw file');
  const raw = await soft(() => rawRun(sz, log));
  log(`  kernel backend, default ${DEFAULT_FUSE_WORKERS} workers`);
  const kernel = await soft(() => atrestRun('kernel', { sz, log }));
  const missing = libfuseMissing();
  let libfuse;
  if (missing === null) {
    log('  libfuse backend');
    libfuse = await soft(() => atrestRun('libfuse', { sz, log }));
  } else libfuse = { error: `not built, skipped (${missing})` };
  const scaling = { [DEFAULT_FUSE_WORKERS]: kernel };
  const SCALE = ['seqwrite', 'randread', 'randwrite'];
  for (const workers of [1, 2, 4].filter((n) => n !== DEFAULT_FUSE_WORKERS)) {
    log(`  kernel backend, ${workers} worker(s)`);
    scaling[workers] = kernel.error
      ? { error: kernel.error }
      : await soft(() => atrestRun('kernel', { workers, only: SCALE, sz, log }));
  }
  return {
    raw,
    kernel,
    libfuse,
    scaling,
    scaleWorkloads: SCALE,
    sizes: sz,
    defaultWorkers: DEFAULT_FUSE_WORKERS,
  };
}

const value = (w, r) => (r === undefined ? undefined : w.unit === 'IOPS' ? r.iops : r.mbps);
const fmt = (x, digits = 0) =>
  x === undefined || x === null || !Number.isFinite(x) ? '-' : x.toFixed(digits);

/** Prints the tables: value and ratio vs raw per backend, CPU s/GiB, worker scaling, the issue's bars. */
export function printIo(r) {
  const { raw, kernel, libfuse, scaling } = r;
  console.log(
    `== through /run/atrest/NAME vs the raw file on the same filesystem (fio libaio O_DIRECT, ${r.sizes.seconds} s each; disk ${r.sizes.disk / MiB} MiB)`,
  );
  for (const [name, x] of [
    ['raw', raw],
    ['kernel', kernel],
    ['libfuse', libfuse],
  ]) {
    if (x.error) console.log(`  ${name}: ${x.error}`);
  }
  console.log(
    `  ${'workload'.padEnd(32)} ${'raw'.padStart(8)} ${'kernel'.padStart(8)} ${'ratio'.padStart(6)} ${'cpu s/GiB'.padStart(9)} ${'libfuse'.padStart(8)} ${'ratio'.padStart(6)} ${'cpu s/GiB'.padStart(9)}`,
  );
  for (const w of WORKLOADS) {
    const rv = value(w, raw[w.id]);
    const k = value(w, kernel[w.id]);
    const l = value(w, libfuse[w.id]);
    console.log(
      `  ${`${w.label} (${w.unit})`.padEnd(32)} ${fmt(rv).padStart(8)} ${fmt(k).padStart(8)} ${fmt(k / rv, 2).padStart(6)} ${fmt(kernel[w.id]?.cpuPerGiB, 2).padStart(9)} ${fmt(l).padStart(8)} ${fmt(l / rv, 2).padStart(6)} ${fmt(libfuse[w.id]?.cpuPerGiB, 2).padStart(9)}`,
    );
  }
  console.log(`== kernel backend worker scaling (ATREST_FUSE_WORKERS; default ${r.defaultWorkers})`);
  for (const id of r.scaleWorkloads) {
    const w = WORKLOADS.find((x) => x.id === id);
    const counts = Object.keys(scaling)
      .map(Number)
      .sort((a, b) => a - b);
    const cells = counts.map((n) => {
      const s = scaling[n];
      if (s.error) return `${n}: -`;
      return `${n}: ${fmt(value(w, s[id]))} ${w.unit} (${fmt(value(w, s[id]) / value(w, raw[id]), 2)}x raw, ${fmt(s[id]?.cpuPerGiB, 2)} cpu s/GiB)`;
    });
    console.log(`  ${w.label.padEnd(20)} ${cells.join('  ')}`);
  }
  for (const [n, s] of Object.entries(scaling))
    if (s.error && !kernel.error) console.log(`  ${n} worker(s): ${s.error}`);
  console.log('== the bars (kernel backend)');
  for (const w of WORKLOADS.filter((x) => x.bar !== undefined)) {
    const ratio = value(w, kernel[w.id]) / value(w, raw[w.id]);
    let ok = Number.isFinite(ratio) && ratio >= w.bar;
    let line = `  ${w.label.padEnd(24)} ${Number.isFinite(ratio) ? `${fmt(ratio, 2)}x raw` : 'not measured'} (bar ${w.bar}x)`;
    if (w.vsLibfuse !== undefined) {
      const vs = value(w, kernel[w.id]) / value(w, libfuse[w.id]);
      if (Number.isFinite(vs)) {
        line += `, ${fmt(vs, 1)}x libfuse (bar ${w.vsLibfuse}x)`;
        ok &&= vs >= w.vsLibfuse;
      } else line += ', vs libfuse: not measured';
    }
    console.log(`${line}  ${ok ? 'PASS' : 'FAIL'}`);
  }
}
