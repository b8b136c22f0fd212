// Unit-test helper (not built into dist/): the message of the USAGE error a call throws, failing the test on any other outcome.
import { expect } from 'vitest';
import { isAtrestError } from '../errors/index.js';

/** The USAGE message `fn` throws (fails the test if it throws anything else, or nothing). */
export function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isAtrestError(err) && err.code).toBe('USAGE');
    return (err as Error).message;
  }
  throw new Error('expected a USAGE error, but nothing was thrown');
}
