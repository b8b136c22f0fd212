#!/usr/bin/env node
// Entry point of the `atrest` command: runs the compiled CLI's main() (npm run build makes dist/).
// The daemon's image I/O runs on libuv's thread pool; 4 threads (the default) serialise a loaded disk.
process.env.UV_THREADPOOL_SIZE ??= '16';
import('../dist/cli/main.js')
  .then(async ({ main }) => {
    const code = await main();
    if (code >= 0) process.exitCode = code; // -1: the command keeps running (atrest daemon)
  })
  .catch((err) => {
    if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
      console.error('atrest: not built yet; run `npm run build` in the atrest directory first');
      process.exit(70);
    }
    throw err;
  });
