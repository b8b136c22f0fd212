import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { excludeMemoryFromCoreDumps } from './core-dumps.js';

describe('no key material in core dumps', () => {
  const tempDir = useTempDir('atrest-core-');

  it('the systemd unit sets LimitCORE=0 in its [Service] section', async () => {
    const unit = await readFile(new URL('../../systemd/atrest.service', import.meta.url), 'utf8');
    const service = unit.slice(unit.indexOf('[Service]'), unit.indexOf('[Install]'));
    expect(service).toMatch(/^LimitCORE=0$/m);
    expect(unit.match(/^LimitCORE=/gm)).toHaveLength(1);
  });

  it('the daemon writes 0 to its coredump_filter, and says when it cannot', async () => {
    const dir = tempDir();
    const f = join(dir, 'coredump_filter');
    await writeFile(f, '00000033\n');
    expect(await excludeMemoryFromCoreDumps(f)).toBe(true);
    expect(await readFile(f, 'utf8')).toBe('0\n');
    expect(await excludeMemoryFromCoreDumps(join(dir, 'missing', 'coredump_filter'))).toBe(false);
  });
});
