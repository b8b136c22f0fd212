// Where the crypto layer's worker modules are: compiled .js beside this file, or .ts sources run through tsx.

/**
 * The worker module `name` for piscina. Compiled (dist/): `name.js` beside this file. From TypeScript
 * sources (vitest, tsx): `name.ts`, loaded through tsx's module hooks (`--import tsx`) in the worker.
 */
export function workerModule(name: string): { filename: string; execArgv?: string[] } {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return { filename: new URL(`./${name}.js`, here).href };
  let tsx = 'tsx';
  try {
    tsx = import.meta.resolve('tsx');
  } catch {
    /* resolve from the working directory instead */
  }
  return { filename: new URL(`./${name}.ts`, here).href, execArgv: ['--import', tsx] };
}
