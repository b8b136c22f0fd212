#!/usr/bin/env node
// Sector crypto benchmark: XTS MB/s on one thread vs `openssl speed -evp aes-256-xts` (same run), and pool scaling.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { CryptoPool, XtsCipher } from '../dist/crypto/index.js';

const SECTOR_SIZES = [512, 4096];
const BATCH = 1024 * 1024;
const POOL_REQUEST = 128 * 1024;

function randomKey() {
  const k = randomBytes(64);
  k[0] = k[32] ^ 1;
  return k;
}

/** Runs `openssl speed` and returns MB/s (10^6 bytes per second) for one block size. */
function opensslMbps(bytes, seconds = 2) {
  return new Promise((resolve, reject) => {
    const args = ['speed', '-evp', 'aes-256-xts', '-bytes', String(bytes), '-seconds', String(seconds)];
    const child = spawn('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 20) * 1000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => /^aes-256-xts\s/i.test(l.trim()));
      const m = line?.trim().match(/([\d.]+)k\s*$/);
      if (code !== 0 || !m) reject(new Error(`openssl speed failed (exit ${code}): ${out.slice(-300)}`));
      else resolve(Number(m[1]) / 1000);
    });
  });
}

/** MB/s of `fn(buf)` over about `ms` milliseconds, after a warm-up. */
function measureSync(fn, bytes, ms) {
  for (let i = 0; i < 5; i++) fn();
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    fn();
    n++;
    now = performance.now();
  }
  return (n * bytes) / ((now - start) * 1000);
}

async function measurePool(workers, ms) {
  const pool = new CryptoPool({ workers, inlineMaxBytes: 0 });
  try {
    const key = await pool.addKey(randomKey());
    const inFlight = workers * 4;
    const bufs = Array.from({ length: inFlight }, () => randomBytes(POOL_REQUEST));
    // warm-up: every worker loads its module and key schedule
    await Promise.all(bufs.map((b, i) => key.encrypt(b, 4096, i * 256)));
    let done = 0;
    let stop = false;
    const start = performance.now();
    const loop = async (b, i) => {
      while (!stop) {
        await key.encrypt(b, 4096, i * 256);
        done += b.length;
        if (performance.now() - start >= ms) stop = true;
      }
    };
    await Promise.all(bufs.map(loop));
    const elapsed = performance.now() - start;
    await key.wipe();
    return done / (elapsed * 1000);
  } finally {
    await pool.destroy();
  }
}

/**
 * Returns { sectors: [{ sectorSize, mbps, decryptMbps, opensslMbps, ratio }], pool: [{ workers, mbps }] }:
 * single-thread XTS encrypt (1 MiB batches) against openssl at the same sector size, and MB/s through
 * the pool (128 KiB requests, 4096-byte sectors) with 1 worker and with one per core.
 */
export async function benchCrypto({ print = true, ms = 1500 } = {}) {
  const sectors = [];
  const cipher = new XtsCipher(randomKey());
  const buf = randomBytes(BATCH);
  for (const sectorSize of SECTOR_SIZES) {
    const mbps = measureSync(() => cipher.encryptInPlace(buf, sectorSize, 1000), BATCH, ms);
    const decryptMbps = measureSync(() => cipher.decryptInPlace(buf, sectorSize, 1000), BATCH, ms);
    const openssl = await opensslMbps(sectorSize);
    sectors.push({ sectorSize, mbps, decryptMbps, opensslMbps: openssl, ratio: mbps / openssl });
  }
  cipher.wipe();
  const all = Math.max(1, availableParallelism());
  const counts = all > 1 ? [1, all] : [1];
  const pool = [];
  for (const workers of counts) pool.push({ workers, mbps: await measurePool(workers, ms) });
  const result = { sectors, pool };
  if (print) {
    console.log('XTS encrypt, one thread, 1 MiB batches, vs openssl speed -evp aes-256-xts (same run)');
    for (const r of sectors) {
      console.log(
        `  ${String(r.sectorSize).padStart(4)} B sectors: ${r.mbps.toFixed(0).padStart(6)} MB/s` +
          ` (decrypt ${r.decryptMbps.toFixed(0)})  openssl ${r.opensslMbps.toFixed(0).padStart(6)} MB/s` +
          `  ratio ${r.ratio.toFixed(3)}`,
      );
    }
    console.log(`pool, ${POOL_REQUEST / 1024} KiB requests, 4096 B sectors`);
    for (const r of pool) console.log(`  ${r.workers} worker(s): ${r.mbps.toFixed(0)} MB/s`);
  }
  return result;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchCrypto();
}
