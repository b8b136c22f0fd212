// Unit-test helper (not built into dist/): asserts that a promise rejects with an AtrestError of a given code.
import { expect } from 'vitest';
import { AtrestError } from './index.js';

/** Awaits `p`, expects an AtrestError with `code` (and a message matching `text`), and returns it. */
export async function rejects(p: Promise<unknown>, code: string, text?: RegExp): Promise<AtrestError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AtrestError);
  const e = err as AtrestError;
  expect(e.code, e.message).toBe(code);
  if (text) expect(e.message).toMatch(text);
  return e;
}
