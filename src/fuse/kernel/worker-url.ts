// Where the kernel backend's worker module is: compiled worker.js, or from sources an esbuild bundle as a data: URL.
import { Buffer } from 'node:buffer';
import { fileURLToPath } from 'node:url';

interface EsbuildLike {
  build(o: object): Promise<{ outputFiles: { contents: Uint8Array }[] }>;
}
const bundles = new Map<string, Promise<string>>();

/**
 * A worker entry as a module URL. Compiled (dist/): the file itself. From TypeScript sources
 * (vitest, tsx): bundled once per process with esbuild (tsx's own dependency) into a data: URL, since
 * registering tsx in each worker costs seconds per thread on a loaded machine.
 */
export function workerUrl(entry: string): Promise<string> {
  if (!entry.endsWith('.ts')) return Promise.resolve(entry);
  let url = bundles.get(entry);
  if (url === undefined) {
    url = (async () => {
      const name = 'esbuild';
      const esbuild = (await import(name)) as EsbuildLike;
      const out = await esbuild.build({
        entryPoints: [fileURLToPath(entry)],
        bundle: true,
        format: 'esm',
        platform: 'node',
        target: 'node20',
        write: false,
        logLevel: 'silent',
      });
      const code = out.outputFiles[0]?.contents ?? new Uint8Array();
      return `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`;
    })();
    bundles.set(entry, url);
  }
  return url;
}

/** The worker module beside this file: worker.js when compiled, worker.ts from sources. */
export function workerEntry(): string {
  const here = import.meta.url;
  return new URL(here.endsWith('.ts') ? './worker.ts' : './worker.js', here).href;
}
