// KMIP key server costs: unwrap (server-side Decrypt of a 32-byte keyslot secret) latency through a real
// pykmip-server on 127.0.0.1 (p50, p99), and how many unwraps per second one host gets with a few in flight,
// and how many volume opens per second one host can do (the key side of an open through the real provider:
// header, state check, unwrap, keyslot, digest). Starts its own server with the test harness (native-test/helpers/kmip-server.ts).
// Run: npm run bench:kmip   (N=500 CONCURRENCY=4 SECONDS=10 to change the run)
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
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

/** Formats `volumes` small images bound to a kmip key on `srv`, then unlocks them round-robin for SECONDS. */
async function volumeOpens(srv, volumes = 4) {
  const { KeyManager } = await import(resolve(ROOT, 'dist/keys/manager.js'));
  const { parseProviders } = await import(resolve(ROOT, 'dist/keys/provider-config.js'));
  const { readLuks2 } = await import(resolve(ROOT, 'dist/luks2/index.js'));
  const dir = await mkdtemp(join(tmpdir(), 'atrest-bench-kmip-'));
  try {
    // the provider checks its TLS files like the daemon does: root's, key not readable by others
    const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client.key') };
    await copyFile(srv.caPath, files.ca);
    await copyFile(srv.client.certPath, files.cert);
    await copyFile(srv.client.keyPath, files.key);
    await chmod(files.key, 0o600);
    const table = parseProviders(
      {
        providers: {
          bench: { type: 'kmip', host: srv.host, port: srv.port, ...files, keyName: 'bench-open' },
        },
      },
      join(dir, 'providers.json'),
    );
    const km = new KeyManager({ providerTable: table }); // its own real kmip provider, as the daemon has
    try {
      // the key on the server, as `key use` makes it
      const c = new KmipClient(srv.endpoint(30_000));
      await c.activate(await c.create('bench-open', 1));
      await c.close();
      const metas = [];
      for (let i = 0; i < volumes; i++) {
        const image = join(dir, `v${i}.img`);
        await km.format({ imagePath: image, dataSize: 1 << 20 }, 'kmip:bench');
        metas.push(await readLuks2(image));
      }
      for (const m of metas) (await km.unlock(m)).volumeKey.fill(0); // warm-up
      const lat = [];
      let done = 0;
      const t0 = Date.now();
      const until = t0 + SECONDS * 1000;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async (_, k) => {
          for (let i = k; Date.now() < until; i += CONCURRENCY) {
            const a = process.hrtime.bigint();
            const u = await km.unlock(await readLuks2(join(dir, `v${i % volumes}.img`)));
            u.volumeKey.fill(0);
            lat.push(Number(process.hrtime.bigint() - a) / 1e6);
            done++;
          }
        }),
      );
      lat.sort((a, b) => a - b);
      return {
        perSec: done / ((Date.now() - t0) / 1000),
        done,
        volumes,
        p50: pct(lat, 50),
        p99: pct(lat, 99),
      };
    } finally {
      km.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

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

  // Volume opens: the key side of `atrest open` (read the LUKS2 header, Get Attributes checks the key the
  // token names, server-side Decrypt of the keyslot secret, keyslot KDF, digest check) through the real
  // provider and key manager, with CONCURRENCY opens in flight, on volumes formatted bound to the server.
  const opens = await volumeOpens(srv);

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
    `volume opens per second (key side: header, state check, unwrap, keyslot, digest; ${CONCURRENCY} in flight, ${opens.volumes} volumes): ${opens.perSec.toFixed(1)} (${opens.done} opens; one open p50 ${ms(opens.p50)}, p99 ${ms(opens.p99)})`,
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
      opensPerSecond: opens.perSec,
      openP50Ms: opens.p50,
      openP99Ms: opens.p99,
      concurrency: CONCURRENCY,
    }),
  );
  await client.close();
} finally {
  await srv.cleanup();
}
