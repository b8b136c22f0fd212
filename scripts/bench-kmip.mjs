// KMIP key server costs: unwrap (server-side Decrypt of a 32-byte keyslot secret) latency through a real
// pykmip-server on 127.0.0.1 (p50, p99), and how many unwraps per second one host gets with a few in flight,
// which bounds the volume opens per second (an open of a kmip-bound volume is one unwrap, plus a state check
// when the provider makes one). Starts its own server with the test harness (native-test/helpers/kmip-server.ts).
// Run: npm run bench:kmip   (N=500 CONCURRENCY=4 SECONDS=10 to change the run)
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { tsImport } from 'tsx/esm/api';

const ROOT = resolve(import.meta.dirname, '..');
const N = Number(process.env.N ?? 500);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 4);
const SECONDS = Number(process.env.SECONDS ?? 10);

const { KmipClient } = await import(resolve(ROOT, 'dist/keys/kmip/client.js'));
const { startKmipServer } = await tsImport(
  resolve(ROOT, 'native-test/helpers/kmip-server.ts'),
  import.meta.url,
);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const ms = (x) => `${x.toFixed(2)} ms`;

const srv = await startKmipServer();
try {
  const client = new KmipClient(srv.endpoint(30_000));
  const uid = await client.create('bench', 1);
  await client.activate(uid);
  const secret = randomBytes(32);
  const wrapped = await client.encrypt(uid, secret);
  const unwrap = async () => {
    const out = await client.decrypt(uid, wrapped.data, wrapped.iv);
    if (!out.equals(secret)) throw new Error('unwrap returned the wrong secret');
    out.fill(0);
  };
  for (let i = 0; i < 20; i++) await unwrap(); // warm-up

  const lat = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    await unwrap();
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  lat.sort((a, b) => a - b);
  const mean = lat.reduce((a, b) => a + b, 0) / lat.length;

  // What an `atrest open` in a fresh process pays: a new connection (TCP + TLS handshake) per unwrap.
  const coldLat = [];
  for (let i = 0; i < Math.min(N, 100); i++) {
    const cold = new KmipClient(srv.endpoint(30_000));
    const t0 = process.hrtime.bigint();
    (await cold.decrypt(uid, wrapped.data, wrapped.iv)).fill(0);
    coldLat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await cold.close();
  }
  coldLat.sort((a, b) => a - b);

  const stateLat = [];
  for (let i = 0; i < Math.min(N, 200); i++) {
    const t0 = process.hrtime.bigint();
    await client.getAttributes(uid);
    stateLat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  stateLat.sort((a, b) => a - b);

  let done = 0;
  const until = Date.now() + SECONDS * 1000;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < until) {
        await unwrap();
        done++;
      }
    }),
  );
  const perSec = done / ((Date.now() - t0) / 1000);

  const providerBuilt = existsSync(resolve(ROOT, 'dist/keys/kmip-provider.js'));
  console.log(
    `KMIP bench against pykmip-server ${srv.host}:${srv.port} (TLS 1.2 mutual auth, reused connections)`,
  );
  console.log(
    `unwrap (Decrypt, AES-256-GCM, 32 bytes) on a reused connection, ${N} sequential calls: p50 ${ms(pct(lat, 50))}, p99 ${ms(pct(lat, 99))}, mean ${ms(mean)}, max ${ms(lat[lat.length - 1])}`,
  );
  console.log(
    `unwrap on a new connection (TLS handshake included), ${coldLat.length} calls: p50 ${ms(pct(coldLat, 50))}, p99 ${ms(pct(coldLat, 99))}`,
  );
  console.log(
    `state check (Get Attributes), ${stateLat.length} calls: p50 ${ms(pct(stateLat, 50))}, p99 ${ms(pct(stateLat, 99))}`,
  );
  console.log(
    `unwraps per second with ${CONCURRENCY} in flight for ${SECONDS} s: ${perSec.toFixed(1)} (${done} calls)`,
  );
  console.log(
    providerBuilt
      ? 'volume opens per second: bounded by the unwrap rate above (one unwrap per open)'
      : 'volume opens per second: the kmip provider is not in this build, so this measures the unwrap round trips an open needs (one per open), an upper bound for opens per second',
  );
  console.log(
    JSON.stringify({
      unwrapP50Ms: pct(lat, 50),
      unwrapP99Ms: pct(lat, 99),
      unwrapMeanMs: mean,
      coldUnwrapP50Ms: pct(coldLat, 50),
      coldUnwrapP99Ms: pct(coldLat, 99),
      stateP50Ms: pct(stateLat, 50),
      stateP99Ms: pct(stateLat, 99),
      unwrapsPerSecond: perSec,
      concurrency: CONCURRENCY,
    }),
  );
  await client.close();
} finally {
  await srv.cleanup();
}
