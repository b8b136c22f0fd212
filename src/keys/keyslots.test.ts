import { describe, expect, it } from 'vitest';
import { generateRecoveryPassphrase } from './keyslots.js';

describe('keyslots', () => {
  it('recovery passphrases are 40 symbols from 32 in 8 groups, and differ', () => {
    const a = generateRecoveryPassphrase();
    const b = generateRecoveryPassphrase();
    expect(a.length).toBe(47);
    expect(a.equals(b)).toBe(false);
  });
});
