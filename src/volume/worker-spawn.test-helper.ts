// Test helper: runs disk-io-worker.test-helper.ts in a real worker thread (TypeScript through tsx's register API) and resolves with its reply.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { WorkerJob, WorkerReply } from './disk-io-worker.test-helper.js';

// the ESM build of tsx's register API (its CJS build cannot be imported from an eval worker)
const tsxApi = pathToFileURL(
  createRequire(import.meta.url)
    .resolve('tsx/esm/api')
    .replace(/\.cjs$/, '.mjs'),
).href;
const script = new URL('./disk-io-worker.test-helper.ts', import.meta.url).href;

export function runWorker(job: WorkerJob): Promise<WorkerReply> {
  // (a .ts entry with execArgv --import tsx is not picked up by Node 20 workers; registering first is)
  const w = new Worker(
    `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(script)}); })`,
    { eval: true, workerData: job },
  );
  return new Promise<WorkerReply>((resolve, reject) => {
    let reply: WorkerReply | null = null;
    w.on('message', (m: WorkerReply) => (reply = m));
    w.once('error', reject);
    w.once('exit', (code) => {
      if (reply !== null) resolve(reply);
      else reject(new Error(`test worker exited ${code} without a reply`));
    });
  });
}
