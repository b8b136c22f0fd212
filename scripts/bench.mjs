#!/usr/bin/env node
// npm run bench: sector crypto vs `openssl speed`, pool scaling, I/O through the disk file vs the raw file for
// each FUSE backend (bench-io.mjs), and in-place conversion. Every ratio comes from one run. --quick: a short smoke run.
import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { benchCrypto } from './bench-crypto.mjs';
import { privateEnv } from './bench-env.mjs';
import { benchIo, printIo } from './bench-io.mjs';

const QUICK = process.argv.includes('--quick');

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'atrest.js');

function run(cmd, args, { env = process.env, timeoutMs = 600_000 } = {}) {
  return new Promise((res, rej) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', rej);
    c.on('close', (code) => {
      clearTimeout(t);
      if (code !== 0) rej(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err || out}`));
      else res(out);
    });
  });
}

async function fio(file, name, rw, bs, iodepth, size, seconds) {
  const out = await run('fio', [
    `--name=${name}`,
    `--filename=${file}`,
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--size=${size}`,
    '--ioengine=libaio',
    '--direct=1',
    `--iodepth=${iodepth}`,
    '--time_based',
    `--runtime=${seconds}`,
    '--ramp_time=1',
    '--group_reporting',
    '--output-format=json',
  ]);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = rw.includes('read') ? job.read : job.write;
  return { mbps: side.bw_bytes / 1e6, iops: side.iops };
}

/**
 * Runs `fn(dir, env, atrest)` in a private atrest environment (temp dir), then stops its daemon and
 * removes every mount, loop device and file it left.
 */
async function withPrivateAtrest(prefix, extraEnv, fn) {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const env = privateEnv(dir, extraEnv);
  const atrest = (args) => run(process.execPath, [BIN, ...args], { env });
  try {
    return await fn(dir, env, atrest);
  } finally {
    await atrest(['daemon', '--stop']).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    await run('bash', [join(ROOT, 'scripts', 'cleanup'), dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** A plaintext image of `size` bytes: random data after a zero first block (written in 8 MiB chunks). */
async function randomFile(path, size) {
  const { open } = await import('node:fs/promises');
  const fh = await open(path, 'w');
  try {
    for (let o = 0; o < size; o += 8 * 2 ** 20) {
      const chunk = randomBytes(Math.min(8 * 2 ** 20, size - o));
      if (o === 0) chunk.fill(0, 0, 4096); // a structured first block, as real disk images have
      await fh.write(chunk);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function timed(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/**
 * In-place conversion: offline `atrest encrypt` vs `cp` + `sync` of the same image (same run), and a
 * 4 KiB random fio load's IOPS on an encrypted volume alone vs on a plaintext image being encrypted
 * online at the daemon's default rate.
 */
async function convBench() {
  return withPrivateAtrest('atrest-bench-conv-', {}, async (dir, env, atrest) => {
    const size = 1024 * 2 ** 20;
    const src = join(dir, 'src.img');
    await randomFile(src, size);
    const copy = join(dir, 'copy.img');
    const conv = join(dir, 'conv.img');
    await run('cp', ['--reflink=never', src, conv]);
    await run('sync', []);
    const cp = await timed(async () => {
      await run('cp', ['--reflink=never', src, copy]);
      await run('sync', []);
    });
    await rm(copy, { force: true });
    await run('sync', []);
    const enc = await timed(() => atrest(['encrypt', conv]));
    // fio: baseline on the (now encrypted) volume, then on a fresh plaintext image under online encryption
    const fioLoad = (file) => fio(file, 'load', 'randrw', '4k', 16, '512M', 8);
    await atrest(['open', conv, 'base']);
    const base = await fioLoad(join(env.ATREST_RUN_DIR, 'base'));
    await atrest(['close', 'base']);
    const online = join(dir, 'online.img');
    await run('cp', ['--reflink=never', src, online]);
    await run('sync', []);
    await atrest(['open', online, 'online', '--encrypt']);
    const during = await fioLoad(join(env.ATREST_RUN_DIR, 'online'));
    const st = JSON.parse(await atrest(['status', 'online', '--json'])).volumes[0].conversion;
    await atrest(['close', 'online']);
    return {
      size,
      cpMBps: size / cp / 1e6,
      encMBps: size / enc / 1e6,
      ratio: cp / enc,
      baseIops: base.iops,
      duringIops: during.iops,
      drop: 1 - during.iops / base.iops,
      convState: `${st.state}, ${st.percent}% done`,
    };
  });
}

function printConv(c) {
  console.log('== in-place conversion (1 GiB image), same run');
  console.log(
    `  offline encrypt ${c.encMBps.toFixed(0)} MB/s  cp+sync ${c.cpMBps.toFixed(0)} MB/s  ratio ${c.ratio.toFixed(3)} (bar 0.5)`,
  );
  console.log(
    `  fio 4k randrw: ${c.baseIops.toFixed(0)} IOPS alone, ${c.duringIops.toFixed(0)} IOPS during online encryption at the default rate (${c.convState} at the end): drop ${(c.drop * 100).toFixed(1)}% (bar 30%)`,
  );
}

/**
 * The conversion part: scripts/bench-convert.mjs's benchConvert() when that file exists (it prints or
 * returns its figures), else the in-place conversion figures above. Fails soft.
 */
async function conversion() {
  const file = join(import.meta.dirname, 'bench-convert.mjs');
  try {
    if (
      await access(file).then(
        () => true,
        () => false,
      )
    ) {
      const mod = await import(pathToFileURL(file).href);
      const r = await mod.benchConvert({ quick: QUICK });
      if (typeof r === 'string') console.log(r);
      else if (Array.isArray(r?.lines)) for (const l of r.lines) console.log(l);
      else if (r !== undefined)
        console.log(`== conversion (scripts/bench-convert.mjs)\n${JSON.stringify(r, null, 2)}`);
    } else if (QUICK) console.log('== conversion: skipped with --quick');
    else printConv(await convBench());
  } catch (err) {
    console.log(`== conversion: failed: ${String(err?.message ?? err).split('\n')[0]}`);
  }
}

if (process.argv.includes('--conversion-only')) {
  await conversion();
  process.exit(0);
}

const crypto = await benchCrypto({ print: false, ...(QUICK ? { ms: 300 } : {}) });
console.log('\n== sector crypto (one worker) vs openssl speed -evp aes-256-xts, same run');
for (const r of crypto.sectors) {
  console.log(
    `  ${String(r.sectorSize).padStart(4)} B sectors: ${r.mbps.toFixed(0).padStart(6)} MB/s  openssl ${r.opensslMbps.toFixed(0).padStart(6)} MB/s  ratio ${r.ratio.toFixed(3)}`,
  );
}
console.log('== pool scaling');
for (const r of crypto.pool) console.log(`  ${r.workers} worker(s): ${r.mbps.toFixed(0)} MB/s`);
if (process.getuid?.() === 0) {
  printIo(await benchIo({ quick: QUICK, log: (l) => console.error(l) }));
  await conversion();
} else {
  console.log('(not root: skipping the disk-file benchmark)');
}
