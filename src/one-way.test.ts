// Source checks for issue 12 "one way to do each thing": constants and helpers written once, documented defaults equal to the code's.
import { describe, expect, it } from 'vitest';
import { DEFAULT_KDF_BUDGET } from './crypto/kdf-limits.js';
import { DEFAULT_CONFIG } from './daemon/config.js';
import { notOpen } from './daemon/not-open.js';
import { runtimePaths } from './daemon/paths.js';
import { DEFAULT_KEY_CHECK_INTERVAL_MS } from './daemon/key-watch.js';
import { DEFAULT_UNREACHABLE_GRACE_MS } from './daemon/unreachable-grace.js';
import { DEFAULT_KEY_STORE, DEFAULT_PROVIDERS, ENV_VARS, keyCheckIntervalSeconds } from './errors/env.js';
import { isAtrestError } from './errors/index.js';
import { DEFAULT_FUSE_BACKEND } from './fuse/backend.js';
import { hostMountNamespace } from './fuse/spawn.js';
import { PlatformKekProvider } from './keys/platform.js';
import { keySourceOf, TOKEN_CMK, TOKEN_PLATFORM } from './keys/tokens.js';
import { filesMatching, sourceText } from './test-helpers/source-files.test-helper.js';

describe('one way to do each thing', () => {
  it('writes the LUKS2 sector sizes out once (crypto/xts.ts SECTOR_SIZES)', () => {
    expect(filesMatching(/\[\s*512,\s*1024,\s*2048,\s*4096\s*\]/)).toEqual(['crypto/xts.ts']);
  });

  it("defines the tests' Node reference XTS once (crypto/node-xts.test-helper.ts)", () => {
    expect(filesMatching(/\bfunction nodeXts\b/, { tests: true })).toEqual([
      'crypto/node-xts.test-helper.ts',
    ]);
  });

  it('defines the XTS tweak unit once (crypto/xts.ts TWEAK_UNIT)', () => {
    expect(filesMatching(/\bconst TWEAK_UNIT\b/)).toEqual(['crypto/xts.ts']);
  });

  it('runs XTS both ways through one implementation with a direction (crypto/xts.ts XtsCipher.inPlace)', () => {
    expect(filesMatching(/\bxts(En|De)cryptInPlace\b/, { tests: true })).toEqual([]);
    const xts = sourceText('crypto/xts.ts');
    expect(xts.match(/\.update\(mem\.subarray\(0, len\)\)/g)).toHaveLength(1);
  });

  it('derives the key source from a binding in one helper (keys keySourceOf)', () => {
    expect(filesMatching(/=== TOKEN_PLATFORM \? 'platform'/)).toEqual(['keys/tokens.ts']);
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

  it('writes the key store and provider configuration defaults once, beside their variables (errors/env.ts)', () => {
    const docs = new Set(['cli/manpage.ts']);
    const code = (re: RegExp): string[] => filesMatching(re).filter((f) => !docs.has(f));
    expect(code(/'\/var\/lib\/atrest\/keys'/)).toEqual(['errors/env.ts']);
    expect(code(/'\/etc\/atrest\/providers\.json'/)).toEqual(['errors/env.ts']);
    expect(runtimePaths({}).keyStore).toBe(DEFAULT_KEY_STORE);
    expect(runtimePaths({}).providers).toBe(DEFAULT_PROVIDERS);
    expect(new PlatformKekProvider().dir).toBe(DEFAULT_KEY_STORE);
  });

  it("documents each ATREST_* variable's default as the code has it (src/errors/env.ts table)", () => {
    const documented = (name: string): string | null | undefined =>
      ENV_VARS.find((v) => v.name === name)?.default;
    const paths = runtimePaths({});
    expect(documented('ATREST_RUN_DIR')).toBe(paths.runDir);
    expect(documented('ATREST_STATE_DIR')).toBe(paths.stateDir);
    expect(documented('ATREST_KEY_STORE')).toBe(paths.keyStore);
    expect(documented('ATREST_AUDIT_LOG')).toBe(paths.auditLog);
    expect(documented('ATREST_PROVIDERS')).toBe(paths.providers);
    expect(documented('ATREST_CONFIG')).toBe(DEFAULT_CONFIG);
    expect(documented('ATREST_HOST_MNT_NS')).toBe(hostMountNamespace({}));
    expect(documented('ATREST_KEY_CHECK_INTERVAL')).toBe(String(keyCheckIntervalSeconds(undefined, {})));
    expect(documented('ATREST_KEY_CHECK_INTERVAL')).toBe(String(DEFAULT_KEY_CHECK_INTERVAL_MS / 1000));
    expect(documented('ATREST_KEY_UNREACHABLE_GRACE')).toBe(String(DEFAULT_UNREACHABLE_GRACE_MS / 1000));
    expect(documented('ATREST_KDF_MAX_MEMORY')).toBe(`${DEFAULT_KDF_BUDGET.maxMemoryKiB / 1024 / 1024} GiB`);
    expect(documented('ATREST_KDF_MAX_SECONDS')).toBe(String(DEFAULT_KDF_BUDGET.maxSeconds));
    expect(documented('ATREST_FUSE_BACKEND')).toBe(DEFAULT_FUSE_BACKEND);
    expect(documented('ATREST_CRYPTO_INLINE_MAX')).toBe('16384');
  });

  it("makes the unit tests' temporary directories in one helper (test-helpers useTempDir)", () => {
    const own = filesMatching(/\bmkdtemp(Sync)?\(/, { tests: true });
    expect(own).toEqual(['test-helpers/temp-dir.test-helper.ts']);
  });

  it('walks the source tree for the guard tests in one helper (test-helpers/source-files)', () => {
    expect(filesMatching(/\breaddirSync\(/, { tests: true }).filter((f) => f.endsWith('.test.ts'))).toEqual(
      [],
    );
  });

  it("defines the tests' USAGE-message helper once (test-helpers usageMessage)", () => {
    expect(filesMatching(/\bfunction usage\w*\(fn: \(\) => unknown\)/, { tests: true })).toEqual([
      'test-helpers/usage-error.test-helper.ts',
    ]);
  });
});
