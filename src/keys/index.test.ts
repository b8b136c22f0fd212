import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readKeyFile } from './index.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const dir = useTempDir('atrest-keys-');

describe('readKeyFile', () => {
  it('returns the whole content byte for byte, newline included', async () => {
    const p = join(dir(), 'k');
    await writeFile(p, 'secret\n');
    expect((await readKeyFile(p)).toString()).toBe('secret\n');
  });
  it('refuses missing, empty and directory key files with typed errors', async () => {
    await expect(readKeyFile(join(dir(), 'missing'))).rejects.toMatchObject({ code: 'FILE_NOT_FOUND' });
    const empty = join(dir(), 'empty');
    await writeFile(empty, '');
    await expect(readKeyFile(empty)).rejects.toMatchObject({ code: 'USAGE' });
    await expect(readKeyFile(dir())).rejects.toMatchObject({ code: 'USAGE' });
  });
});
