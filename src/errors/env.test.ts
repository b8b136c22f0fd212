import { describe, expect, it } from 'vitest';
import {
  ENV_VARS,
  envFlag,
  envKdfMaxMemoryKiB,
  envKdfMaxSeconds,
  envSet,
  envValue,
  keyCheckIntervalSeconds,
} from './env.js';
import { usageMessage } from '../test-helpers/usage-error.test-helper.js';

describe('the ATREST_* table', () => {
  it('names each variable once, each with a meaning and a validation', () => {
    const names = ENV_VARS.map((v) => v.name);
    expect(new Set(names).size).toBe(names.length);
    for (const v of ENV_VARS) {
      expect(v.name).toMatch(/^ATREST_[A-Z0-9_]+$/);
      expect(v.meaning.length, v.name).toBeGreaterThan(10);
      expect(v.validation.length, v.name).toBeGreaterThan(2);
    }
  });
});

describe('reading variables', () => {
  it('envValue is the raw value, envSet treats empty as unset, envFlag wants exactly 1', () => {
    expect(envValue('ATREST_CONFIG', {})).toBeUndefined();
    expect(envValue('ATREST_CONFIG', { ATREST_CONFIG: '' })).toBe('');
    expect(envSet('ATREST_RUN_DIR', { ATREST_RUN_DIR: '' })).toBeUndefined();
    expect(envSet('ATREST_RUN_DIR', { ATREST_RUN_DIR: '/x' })).toBe('/x');
    expect(envFlag('ATREST_FIPS', { ATREST_FIPS: '1' })).toBe(true);
    for (const v of [undefined, '', '0', 'yes', 'true', ' 1'])
      expect(envFlag('ATREST_FIPS', { ATREST_FIPS: v })).toBe(false);
  });

  it('reads the process environment by default', () => {
    process.env.ATREST_HOST_MNT_NS = '/proc/42/ns/mnt';
    try {
      expect(envSet('ATREST_HOST_MNT_NS')).toBe('/proc/42/ns/mnt');
    } finally {
      delete process.env.ATREST_HOST_MNT_NS;
    }
  });
});

describe('ATREST_KDF_MAX_MEMORY / ATREST_KDF_MAX_SECONDS', () => {
  it('takes KiB or K/M/G, seconds or s; unset or empty: undefined (the default)', () => {
    expect(envKdfMaxMemoryKiB({})).toBeUndefined();
    expect(envKdfMaxMemoryKiB({ ATREST_KDF_MAX_MEMORY: '' })).toBeUndefined();
    expect(envKdfMaxMemoryKiB({ ATREST_KDF_MAX_MEMORY: '1048576' })).toBe(1048576);
    expect(envKdfMaxMemoryKiB({ ATREST_KDF_MAX_MEMORY: '64k' })).toBe(64);
    expect(envKdfMaxMemoryKiB({ ATREST_KDF_MAX_MEMORY: ' 512 MiB ' })).toBe(512 * 1024);
    expect(envKdfMaxMemoryKiB({ ATREST_KDF_MAX_MEMORY: '1.5G' })).toBe(1.5 * 1024 * 1024);
    expect(envKdfMaxSeconds({ ATREST_KDF_MAX_SECONDS: '' })).toBeUndefined();
    expect(envKdfMaxSeconds({ ATREST_KDF_MAX_SECONDS: '2.5' })).toBe(2.5);
    expect(envKdfMaxSeconds({ ATREST_KDF_MAX_SECONDS: '60s' })).toBe(60);
  });

  it('refuses every other value with USAGE naming the variable and the value', () => {
    for (const bad of ['abc', '0', '0M', '-1', '1T', '5X', '1e3', '0.0001', '  ', '1 G B', '0x10']) {
      expect(usageMessage(() => envKdfMaxMemoryKiB({ ATREST_KDF_MAX_MEMORY: bad }))).toBe(
        `ATREST_KDF_MAX_MEMORY=${JSON.stringify(bad)} is not a positive amount`,
      );
    }
    for (const bad of ['soon', '0', '-5', '5m', '1h', '  ', 'Infinity']) {
      expect(usageMessage(() => envKdfMaxSeconds({ ATREST_KDF_MAX_SECONDS: bad }))).toBe(
        `ATREST_KDF_MAX_SECONDS=${JSON.stringify(bad)} is not a positive amount`,
      );
    }
  });
});

describe('ATREST_KEY_CHECK_INTERVAL', () => {
  it('flag over variable over 5 s', () => {
    expect(keyCheckIntervalSeconds(undefined, {})).toBe(5);
    expect(keyCheckIntervalSeconds(undefined, { ATREST_KEY_CHECK_INTERVAL: '0.5' })).toBe(0.5);
    expect(keyCheckIntervalSeconds(30, { ATREST_KEY_CHECK_INTERVAL: '0.5' })).toBe(30);
    expect(keyCheckIntervalSeconds(30, { ATREST_KEY_CHECK_INTERVAL: 'junk' })).toBe(30);
  });

  it('refuses values outside 0.1 to 3600 (an empty variable counts as 0), flag or variable', () => {
    for (const bad of ['', '0', '0.05', '3601', 'soon', '-1', 'NaN']) {
      expect(
        usageMessage(() => keyCheckIntervalSeconds(undefined, { ATREST_KEY_CHECK_INTERVAL: bad })),
      ).toMatch(/^key check interval .* s is out of range \(0\.1 to 3600\)$/);
    }
    expect(usageMessage(() => keyCheckIntervalSeconds(0, {}))).toMatch(/out of range/);
  });
});
