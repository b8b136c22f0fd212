// Writes that are durable when they return without flushing the rest of the file: O_DIRECT|O_DSYNC from an aligned slab, or O_DSYNC.
//
// Why: the converter must make each batch durable before the record that points at it, and an
// fdatasync of the whole image also writes back every page the user dirtied meanwhile, turning page
// cache writes into device writes once per batch and slowing the user down. A write through a
// descriptor opened O_DSYNC is durable on return for its own range only (the kernel writes back that
// range and flushes the device cache); with O_DIRECT the data also bypasses the page cache, so one
// batch is one device write instead of a few thousand folios.
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { fromSystemError } from '../errors/index.js';
import { writeImage } from './image-write.js';

/** O_DIRECT needs buffer address, file offset and length aligned; 4096 covers every logical block size. */
export const DIRECT_ALIGN = 4096;

/** What malloc guarantees for a buffer's start: the step of the alignment probe. */
const MALLOC_ALIGN = 16;

/** A descriptor of `fh`'s file opened O_DIRECT|O_DSYNC and a slab whose memory is aligned for it. */
interface Direct {
  fh: FileHandle;
  slab: Buffer;
}

/**
 * Opens `fh`'s file again with O_DIRECT|O_DSYNC (through /proc/self/fd: the same file, never a path
 * looked up again) and finds an aligned slab of `slabBytes`. Node exposes no buffer addresses, so the
 * alignment is probed: an O_DIRECT read into a misaligned buffer fails with EINVAL, and a large
 * buffer's memory never moves. Its start is only malloc-aligned (16 bytes past a page, typically), so
 * every 16-byte offset of the first 4 KiB is a candidate. Null when the filesystem has no O_DIRECT or nothing aligned was found.
 */
async function openDirect(fh: FileHandle, slabBytes: number): Promise<Direct | null> {
  let dfh: FileHandle;
  try {
    dfh = await open(`/proc/self/fd/${fh.fd}`, constants.O_RDWR | constants.O_DIRECT | constants.O_DSYNC);
  } catch {
    return null;
  }
  const big = Buffer.allocUnsafeSlow(slabBytes + DIRECT_ALIGN);
  for (let at = 0; at < DIRECT_ALIGN; at += MALLOC_ALIGN) {
    try {
      await dfh.read(big, at, DIRECT_ALIGN, 0);
      return { fh: dfh, slab: big.subarray(at, at + slabBytes) };
    } catch {
      /* misaligned (EINVAL): try the next offset */
    }
  }
  await dfh.close().catch(() => undefined);
  return null;
}

/**
 * Durable writes to one open file. `direct` writes bypass the page cache: the caller guarantees that
 * nothing reads or writes that range through the page cache meanwhile (a range lock held, and no
 * readahead can reach it); anything else goes through an O_DSYNC descriptor.
 */
export class DurableWriter {
  #direct: Direct | null | undefined;
  #dsync: FileHandle | undefined;

  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly slabBytes: number,
  ) {}

  /** Writes `buf` at `pos`; when it returns, these bytes are on stable storage. */
  async write(buf: Buffer, pos: number, o: { direct?: boolean } = {}): Promise<void> {
    try {
      if (o.direct === true) {
        if (await this.#writeDirect(buf, pos)) return;
        // no O_DIRECT here: through the page cache, then the whole file's fdatasync
        await writeImage(this.fh, buf, pos, this.path);
        await this.fh.datasync();
        return;
      }
      // small writes (records, sums): one O_DSYNC write, which writes back and flushes only its range
      this.#dsync ??= await open(`/proc/self/fd/${this.fh.fd}`, constants.O_RDWR | constants.O_DSYNC);
      await writeImage(this.#dsync, buf, pos, this.path, Infinity);
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  /** False when O_DIRECT cannot take this write (no O_DIRECT, misaligned): then nothing was written. */
  async #writeDirect(buf: Buffer, pos: number): Promise<boolean> {
    if (pos % DIRECT_ALIGN !== 0 || buf.length % DIRECT_ALIGN !== 0) return false;
    if (this.#direct === undefined) this.#direct = await openDirect(this.fh, this.slabBytes);
    const d = this.#direct;
    if (d === null) return false;
    for (let done = 0; done < buf.length;) {
      const n = Math.min(d.slab.length, buf.length - done);
      buf.copy(d.slab, 0, done, done + n);
      try {
        await writeImage(d.fh, d.slab.subarray(0, n), pos + done, this.path, Infinity);
      } catch (err) {
        // refused after all (EINVAL): this writer goes through the page cache from now on
        if (done !== 0 || (err as { code?: unknown }).code !== 'EINVAL') throw err;
        this.#direct = null;
        await d.fh.close().catch(() => undefined);
        return false;
      }
      done += n;
    }
    return true;
  }

  /** Whether direct writes bypass the page cache here: null before the first one was tried. */
  get direct(): boolean | null {
    return this.#direct === undefined ? null : this.#direct !== null;
  }

  async close(): Promise<void> {
    const d = this.#direct;
    this.#direct = null;
    await d?.fh.close().catch(() => undefined);
    const s = this.#dsync;
    this.#dsync = undefined;
    await s?.close().catch(() => undefined);
  }
}
