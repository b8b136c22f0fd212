// What native tests do with disk files and images: positioned reads and fsynced writes, hashes, and
// the one-line error every failing command must print.
import { createHash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { expect } from 'vitest';
import { run } from './cli.js';

/** Writes `data` at `pos` into a disk file and fsyncs it (the test process is not the FUSE server). */
export async function writeDisk(path: string, pos: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, pos);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function readDisk(path: string, pos: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, pos);
    return b;
  } finally {
    await fh.close();
  }
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export async function sha256File(p: string): Promise<string> {
  return sha256(await readFile(p));
}

/** A failed command: the documented exit code and exactly one `atrest: ...` line, no stack trace. */
export function expectOneLineError(r: { code: number; stderr: string }, exit: number, text: RegExp): void {
  expect(r.code, r.stderr).toBe(exit);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^atrest: /);
  expect(lines[0]).toMatch(text);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** One 4 KiB write of random bytes at 4 KiB block `block`, through the page cache, made durable: dd ... conv=notrunc,fsync. */
export async function ddBlock(disk: string, block: number): Promise<{ ok: boolean; eio: boolean }> {
  const r = await run(
    'dd',
    [
      'if=/dev/urandom',
      `of=${disk}`,
      'bs=4096',
      'count=1',
      `seek=${block}`,
      'conv=notrunc,fsync',
      'status=none',
    ],
    { timeoutMs: 60_000 },
  );
  return { ok: r.code === 0, eio: /Input\/output error/.test(r.stderr) };
}
