#!/usr/bin/env node
// npm run bench: sector crypto vs `openssl speed`, pool scaling, I/O through the disk file vs the raw file for
// each FUSE backend (bench-io.mjs), and in-place conversion. Every ratio comes from one run. --quick: a short smoke run.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { benchCrypto } from './bench-crypto.mjs';
import { randomFile, run, withPrivateAtrest } from './bench-env.mjs';
import { benchConvert, printConvert } from './bench-convert.mjs';
import { benchIo, printIo } from './bench-io.mjs';

const QUICK = process.argv.includes('--quick');

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
