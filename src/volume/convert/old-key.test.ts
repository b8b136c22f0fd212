import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { unwrapOldKey, wrapOldKey } from './old-key.js';

describe("a reencryption's old key in its plan", () => {
  const newKey = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const oldKey = Buffer.from(Array.from({ length: 64 }, (_, i) => 0xff - i));

  it('wraps to the bytes earlier atrest wrote (plans of images mid-reencryption still resume)', () => {
    const wrapped =
      'ShAOlw7arwjkr3K8fbPpKI20P7q4zLaDibBBlLy2yrh9zmxX7b3KP/9hwFxIkVIIBuExWZECXdq8DUJ3fVjwkCsP/WjAQFsw';
    expect(wrapOldKey(newKey, oldKey)).toBe(wrapped);
    expect(unwrapOldKey(newKey, wrapped).equals(oldKey)).toBe(true);
  });

  it('does not unwrap under another new key: CORRUPT_HEADER', () => {
    expect(() => unwrapOldKey(randomBytes(64), wrapOldKey(newKey, oldKey))).toThrow(
      expect.objectContaining({ code: 'CORRUPT_HEADER' }),
    );
  });
});
