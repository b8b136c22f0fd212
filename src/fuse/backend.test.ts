// FUSE backend settings: flags win over the environment, every bad value is a USAGE error naming its source.
import { describe, expect, it } from 'vitest';
import { availableParallelism } from 'node:os';
import {
  DEFAULT_FUSE_WORKERS,
  fuseSettings,
  parseFuseBackend,
  parseFuseMaxMinor,
  parseFuseWorkers,
} from './backend.js';
import { usageMessage } from '../test-helpers/usage-error.test-helper.js';

describe('FUSE backend settings', () => {
  it('default: kernel chosen later (no backend), one worker per core (2 to 8), no forced minor', () => {
    expect(fuseSettings({}, {})).toEqual({ workers: DEFAULT_FUSE_WORKERS });
    expect(DEFAULT_FUSE_WORKERS).toBe(Math.min(8, Math.max(2, availableParallelism())));
  });

  it('takes the environment, and a flag over it', () => {
    const env = { ATREST_FUSE_BACKEND: 'libfuse', ATREST_FUSE_WORKERS: '2', ATREST_FUSE_MAX_MINOR: '31' };
    expect(fuseSettings({}, env)).toEqual({ backend: 'libfuse', workers: 2, maxMinor: 31 });
    expect(fuseSettings({ backend: 'kernel', workers: 8 }, env)).toEqual({
      backend: 'kernel',
      workers: 8,
      maxMinor: 31,
    });
    expect(fuseSettings({}, { ATREST_FUSE_BACKEND: '', ATREST_FUSE_WORKERS: '' })).toEqual({
      workers: DEFAULT_FUSE_WORKERS,
    });
  });

  it('refuses unknown backends and out-of-range numbers, naming where the value came from', () => {
    expect(usageMessage(() => fuseSettings({ backend: 'fuse3' }, {}))).toMatch(
      /--fuse-backend: unknown FUSE backend "fuse3": choose kernel or libfuse/,
    );
    expect(usageMessage(() => fuseSettings({}, { ATREST_FUSE_BACKEND: 'Kernel' }))).toMatch(
      /^ATREST_FUSE_BACKEND: /,
    );
    expect(usageMessage(() => fuseSettings({ workers: 0 }, {}))).toMatch(/--fuse-workers: .* from 1 to 64/);
    expect(usageMessage(() => fuseSettings({ workers: 65 }, {}))).toMatch(/from 1 to 64/);
    expect(usageMessage(() => fuseSettings({ workers: 1.5 }, {}))).toMatch(/whole number/);
    expect(usageMessage(() => fuseSettings({}, { ATREST_FUSE_WORKERS: '4x' }))).toMatch(
      /^ATREST_FUSE_WORKERS: /,
    );
    expect(usageMessage(() => fuseSettings({}, { ATREST_FUSE_MAX_MINOR: '19' }))).toMatch(
      /ATREST_FUSE_MAX_MINOR: .* from 31 to 255/,
    );
    expect(usageMessage(() => parseFuseBackend(undefined, 'x'))).toMatch(/^x: /);
  });

  it('accepts the bounds', () => {
    expect(parseFuseWorkers(1, 'w')).toBe(1);
    expect(parseFuseWorkers('64', 'w')).toBe(64);
    expect(parseFuseMaxMinor(' 45 ', 'm')).toBe(45);
    expect(parseFuseBackend('libfuse', 'b')).toBe('libfuse');
  });
});
