// luksRemnants: a file whose LUKS2 headers are gone or damaged is still recognised as a LUKS volume, plaintext is not.
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { formatLuks2 } from './format.js';
import { luksRemnants } from './remnants.js';
import { readLuks2 } from './volume.js';

const dir = useTempDir('atrest-remnants-');

async function overwrite(path: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

describe('luksRemnants', () => {
  it('finds nothing in plaintext', async () => {
    const path = join(dir(), 'plain.img');
    await writeFile(path, Buffer.alloc(1 << 20, 0x5a));
    expect(await luksRemnants(path)).toBeNull();
  });

  it('names the primary magic, then the secondary header, then the JSON metadata, as each is wiped', async () => {
    const path = join(dir(), 'luks.img');
    await formatLuks2({
      imagePath: path,
      dataSize: 1 << 20,
      passphrase: Buffer.from('r'),
      pbkdf2Iterations: 1000,
    });
    const meta = await readLuks2(path);
    expect(await luksRemnants(path)).toBe('starts with a LUKS header');
    await overwrite(path, 0, Buffer.alloc(6));
    expect(await luksRemnants(path)).toBe(`holds LUKS2 metadata at offset 4096`);
    await overwrite(path, 4096, Buffer.alloc(4096));
    expect(await luksRemnants(path)).toBe(`has a LUKS2 secondary header at offset ${meta.hdrSize}`);
    await overwrite(path, meta.hdrSize, Buffer.alloc(6));
    expect(await luksRemnants(path)).toBe(`holds LUKS2 metadata at offset ${meta.hdrSize + 4096}`);
  });
});
