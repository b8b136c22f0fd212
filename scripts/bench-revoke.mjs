// Revocation latency: time from `atrest key revoke` to the open volume being locked (status), with
// the daemon's default KEK check interval, over several rounds. Run as root: npm run bench:revoke
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { privateEnv } from './bench-env.mjs';

const run = promisify(execFile);
const BIN = resolve(import.meta.dirname, '..', 'bin', 'atrest.js');
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const dir = await mkdtemp(join(tmpdir(), 'atrest-bench-revoke-'));
const env = privateEnv(dir);
delete env.ATREST_KEY_CHECK_INTERVAL; // the default interval is what users get
const atrest = async (...args) =>
  (await run(process.execPath, [BIN, ...args], { env, timeout: 60_000 })).stdout;

try {
  const kek = join(dir, 'kek');
  await writeFile(kek, randomBytes(32), { mode: 0o600 });
  // the host's provider configuration names the key file; the image's token names only `ref:bench`
  await writeFile(
    env.ATREST_PROVIDERS,
    JSON.stringify({ providers: { bench: { type: 'file', path: kek } } }),
    {
      mode: 0o644,
    },
  );
  const img = join(dir, 'r.img');
  await atrest('format', img, '--size', '16M', '--kek', 'bench');
  const latencies = [];
  for (let i = 0; i < ROUNDS; i++) {
    await atrest('open', img, 'r');
    // revoke at a random point of the check cycle
    await new Promise((r) => setTimeout(r, 500 + Math.random() * 5000));
    const t0 = Date.now();
    await atrest('key', 'revoke', '--kek', 'bench');
    for (;;) {
      const s = JSON.parse(await atrest('status', 'r', '--json')).volumes[0].encryption;
      if (s.locked) {
        latencies.push(Date.parse(s.lockedAt) - t0);
        break;
      }
      if (Date.now() - t0 > 60_000) throw new Error('volume never locked');
      await new Promise((r) => setTimeout(r, 50));
    }
    await atrest('close', 'r');
    await atrest('key', 'restore', '--kek', 'bench');
  }
  latencies.sort((a, b) => a - b);
  console.log(`revocation -> locked (default check interval), ${ROUNDS} rounds, ms: ${latencies.join(' ')}`);
  console.log(`max ${latencies.at(-1)} ms (bar: 10000 ms)`);
} finally {
  await atrest('daemon', '--stop').catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
