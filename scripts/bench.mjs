#!/usr/bin/env node
// npm run bench: sector crypto vs `openssl speed`, pool scaling, I/O through the disk file vs the raw file for
// each FUSE backend (bench-io.mjs), and in-place conversion. Every ratio comes from one run. --quick: a short smoke run.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchCrypto } from './bench-crypto.mjs';
import { privateEnv } from './bench-env.mjs';
import { benchConvert, printConvert } from './bench-convert.mjs';
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
 * Offline in-place conversion: `atrest encrypt` vs `cp` + `sync` of the same image (same run). Online
 * conversion against foreground I/O is scripts/bench-convert.mjs.
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
    return {
      size,
      cpMBps: size / cp / 1e6,
      encMBps: size / enc / 1e6,
      ratio: cp / enc,
    };
  });
}

function printConv(c) {
  console.log('== in-place conversion (1 GiB image), same run');
  console.log(
    `  offline encrypt ${c.encMBps.toFixed(0)} MB/s  cp+sync ${c.cpMBps.toFixed(0)} MB/s  ratio ${c.ratio.toFixed(3)} (bar 0.5)`,
  );
}

/** The conversion part: offline (above) and online against foreground I/O (bench-convert.mjs). Fails soft. */
async function conversion() {
  try {
    if (QUICK) console.log('== offline conversion: skipped with --quick');
    else printConv(await convBench());
  } catch (err) {
    console.log(`== offline conversion: failed: ${String(err?.message ?? err).split('\n')[0]}`);
  }
  try {
    const r = await benchConvert({ quick: QUICK });
    printConvert(r);
  } catch (err) {
    console.log(`== online conversion: failed: ${String(err?.message ?? err).split('\n')[0]}`);
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
