import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DIRECT_ALIGN, DurableWriter } from './durable-write.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const dir = useTempDir('atrest-durable-');

async function withFile(
  size: number,
  fn: (w: DurableWriter, path: string) => Promise<void>,
): Promise<Buffer> {
  const path = join(dir(), `f-${randomBytes(4).toString('hex')}`);
  await writeFile(path, Buffer.alloc(size));
  const fh = await open(path, 'r+');
  const w = new DurableWriter(fh, path, 64 * 1024);
  try {
    await fn(w, path);
  } finally {
    await w.close();
    await fh.close();
  }
  return readFile(path);
}

describe('DurableWriter', () => {
  it('direct writes larger than the slab land exactly, and the file can still be written buffered', async () => {
    const a = randomBytes(200 * 1024);
    const b = randomBytes(4096);
    const got = await withFile(1024 * 1024, async (w) => {
      expect(w.direct).toBe(null);
      await w.write(a, 3 * DIRECT_ALIGN, { direct: true });
      await w.write(b, 100 * DIRECT_ALIGN, { direct: true });
      // the temp dir is on a filesystem with O_DIRECT (ext4, tmpfs): the aligned slab must be found
      // wherever malloc put the buffer (16 bytes past a page in the daemon)
      expect(w.direct).toBe(true);
    });
    expect(got.subarray(3 * DIRECT_ALIGN, 3 * DIRECT_ALIGN + a.length).equals(a)).toBe(true);
    expect(got.subarray(100 * DIRECT_ALIGN, 101 * DIRECT_ALIGN).equals(b)).toBe(true);
    expect(got.subarray(0, 3 * DIRECT_ALIGN).equals(Buffer.alloc(3 * DIRECT_ALIGN))).toBe(true);
  });

  it('a misaligned direct write falls back to the page cache and still lands exactly', async () => {
    const a = randomBytes(5000);
    const got = await withFile(64 * 1024, async (w) => {
      await w.write(a, 1234, { direct: true });
    });
    expect(got.subarray(1234, 1234 + a.length).equals(a)).toBe(true);
  });

  it('small O_DSYNC writes (records) land exactly, also past the end of the file', async () => {
    const a = randomBytes(4096);
    const b = randomBytes(100);
    const got = await withFile(8192, async (w) => {
      await w.write(a, 4096);
      await w.write(b, 8192);
    });
    expect(got.length).toBe(8292);
    expect(got.subarray(4096, 8192).equals(a)).toBe(true);
    expect(got.subarray(8192).equals(b)).toBe(true);
  });
});
