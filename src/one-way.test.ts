// Source checks for issue 12 "one way to do each thing": constants and helpers that must be written once.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { notOpen } from './daemon/not-open.js';
import { runtimePaths } from './daemon/paths.js';
import { isAtrestError } from './errors/index.js';
import { keySourceOf, TOKEN_CMK, TOKEN_PLATFORM } from './keys/manager.js';
import { DEFAULT_KEY_STORE } from './keys/platform.js';
import { DEFAULT_PROVIDERS } from './keys/provider-config.js';

const SRC = new URL('.', import.meta.url).pathname;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sourceFiles(join(dir, e.name))
      : e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.test-helper.ts')
        ? [join(dir, e.name)]
        : [],
  );
}

/** The src/-relative files (not tests) whose text matches `re`. */
function filesMatching(re: RegExp): string[] {
  return sourceFiles(SRC)
    .filter((f) => re.test(readFileSync(f, 'utf8')))
    .map((f) => relative(SRC, f))
    .sort();
}

describe('one way to do each thing', () => {
  it('writes the LUKS2 sector sizes out once (crypto/xts.ts SECTOR_SIZES)', () => {
    expect(filesMatching(/\[\s*512,\s*1024,\s*2048,\s*4096\s*\]/)).toEqual(['crypto/xts.ts']);
  });

  it('defines the XTS tweak unit once (crypto/xts.ts TWEAK_UNIT)', () => {
    expect(filesMatching(/\bconst TWEAK_UNIT\b/)).toEqual(['crypto/xts.ts']);
  });

  it('derives the key source from a binding in one helper (keys keySourceOf)', () => {
    expect(filesMatching(/=== TOKEN_PLATFORM \? 'platform'/)).toEqual(['keys/manager.ts']);
    expect(keySourceOf(null)).toBe('passphrase');
    expect(keySourceOf(undefined)).toBe('passphrase');
    expect(keySourceOf({ type: TOKEN_PLATFORM })).toBe('platform');
    expect(keySourceOf({ type: TOKEN_CMK })).toBe('customer');
  });

  it("builds the daemon's NOT_OPEN error in one function (daemon/not-open.ts)", () => {
    expect(filesMatching(/'NOT_OPEN',\s*`no open volume/)).toEqual(['daemon/not-open.ts']);
    const err = notOpen('vm');
    expect(isAtrestError(err) && err.code).toBe('NOT_OPEN');
    expect(err.message).toBe('no open volume is named vm');
    expect(err.hint).toBe('see `atrest status`');
  });

  it('writes the key store and provider configuration defaults once (code; the man page documents them)', () => {
    const code = (re: RegExp): string[] => filesMatching(re).filter((f) => f !== 'cli/manpage.ts');
    expect(code(/'\/var\/lib\/atrest\/keys'/)).toEqual(['keys/platform.ts']);
    expect(code(/'\/etc\/atrest\/providers\.json'/)).toEqual(['keys/provider-config.ts']);
    expect(runtimePaths({}).keyStore).toBe(DEFAULT_KEY_STORE);
    expect(runtimePaths({}).providers).toBe(DEFAULT_PROVIDERS);
  });
});
