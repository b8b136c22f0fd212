// Runs many `atrest ARGS...` command lines in one Node process through the CLI's own main() (what bin/atrest.js runs), so a test can try hundreds of images without paying Node's start-up each time.
// stdin: a JSON array of argument arrays. stdout: a JSON array of { code, stdout, stderr }, one per job.
import { format } from 'node:util';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..', '..');

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

const jobs = JSON.parse(await readStdin());
const write = process.stdout.write.bind(process.stdout);
let out = '';
let err = '';
console.log = (...a) => void (out += `${format(...a)}\n`);
console.error = (...a) => void (err += `${format(...a)}\n`);
console.warn = console.error;
const { main } = await import(pathToFileURL(join(ROOT, 'dist', 'cli', 'main.js')).href);
const results = [];
for (const argv of jobs) {
  out = '';
  err = '';
  let code;
  try {
    code = await main(argv);
  } catch (e) {
    err += `batch: main threw: ${e instanceof Error ? e.stack : String(e)}\n`;
    code = 70;
  }
  results.push({ code, stdout: out, stderr: err });
}
process.exitCode = 0;
write(JSON.stringify(results));
