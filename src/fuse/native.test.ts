// The optional libfuse binding loads lazily; when it is missing or unbuilt, choosing it fails with MISSING_TOOL saying why.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { isAtrestError } from '../errors/index.js';
import { loadFuseNativeWith } from './native.js';

/** A require whose loading of @cocalc/fuse-native throws `err`. */
function failingRequire(err: Error & { code?: string }): NodeJS.Require {
  const real = createRequire(import.meta.url);
  const req = ((id: string) => {
    if (id.startsWith('@cocalc/fuse-native')) throw err;
    return real(id) as unknown;
  }) as NodeJS.Require;
  req.resolve = real.resolve;
  return req;
}

function missingToolMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isAtrestError(err) && err.code).toBe('MISSING_TOOL');
    expect(isAtrestError(err) && err.hint).toMatch(/libfuse-dev.*scripts\/setup.*--fuse-backend kernel/);
    return (err as Error).message;
  }
  throw new Error('expected MISSING_TOOL');
}

describe('loading the libfuse fallback binding', () => {
  it('names a package npm skipped (its optional build failed)', () => {
    const err = Object.assign(new Error("Cannot find module '@cocalc/fuse-native'\nRequire stack:\n- x"), {
      code: 'MODULE_NOT_FOUND',
    });
    expect(missingToolMessage(() => loadFuseNativeWith(failingRequire(err)))).toBe(
      'the libfuse fallback backend is not built: the optional npm package @cocalc/fuse-native is not installed (its build failed or was skipped at set-up)',
    );
  });

  it('names a binding that was never compiled', () => {
    const err = new Error('No native build was found for platform=linux arch=x64 runtime=node abi=115');
    expect(missingToolMessage(() => loadFuseNativeWith(failingRequire(err)))).toMatch(
      /^the libfuse fallback backend is not built: .*native part was not compiled/,
    );
  });

  it('names a missing libfuse2', () => {
    const err = new Error('libfuse.so.2: cannot open shared object file: No such file or directory');
    expect(missingToolMessage(() => loadFuseNativeWith(failingRequire(err)))).toMatch(
      /not built: the system library libfuse2 is missing \(libfuse\.so\.2: cannot open/,
    );
  });

  it('is not loaded by importing the FUSE layer', async () => {
    const req = createRequire(import.meta.url);
    const id = (() => {
      try {
        return req.resolve('@cocalc/fuse-native');
      } catch {
        return null;
      }
    })();
    await import('./index.js');
    if (id !== null) expect(req.cache[id]).toBeUndefined();
  });
});
