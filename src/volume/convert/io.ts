// The converter's file access (read, write, durable write, sync, grow): an interface tests substitute with a fault-injecting disk, and the real one over fs/promises.
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { fromSystemError } from '../../errors/index.js';
import { DurableWriter } from '../durable-write.js';
import { writeImage } from '../image-write.js';
import { DEFAULT_BATCH_BYTES } from './plan.js';

export interface ConvFile {
  /** Reads exactly buf.length bytes at pos (zeros past the end). */
  read(buf: Buffer, pos: number): Promise<void>;
  write(buf: Buffer, pos: number): Promise<void>;
  /**
   * Writes `buf` at `pos` and makes these bytes durable, without flushing the file's other dirty data
   * where the filesystem allows (O_DSYNC; O_DIRECT too when `direct`: the caller guarantees nothing
   * uses that range through the page cache meanwhile). Otherwise write + fdatasync.
   */
  writeDurable(buf: Buffer, pos: number, o?: { direct?: boolean }): Promise<void>;
  /** fdatasync. */
  sync(): Promise<void>;
  size(): Promise<number>;
  truncate(size: number): Promise<void>;
  close(): Promise<void>;
}

export interface ConvIo {
  open(path: string): Promise<ConvFile>;
}

class NodeFile implements ConvFile {
  readonly #durable: DurableWriter;
  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
  ) {
    this.#durable = new DurableWriter(fh, path, DEFAULT_BATCH_BYTES / 2);
  }

  writeDurable(buf: Buffer, pos: number, o?: { direct?: boolean }): Promise<void> {
    return this.#durable.write(buf, pos, o);
  }

  async read(buf: Buffer, pos: number): Promise<void> {
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesRead } = await this.fh.read(buf, done, buf.length - done, pos + done);
        if (bytesRead === 0) {
          buf.fill(0, done);
          return;
        }
        done += bytesRead;
      }
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async write(buf: Buffer, pos: number): Promise<void> {
    try {
      await writeImage(this.fh, buf, pos, this.path);
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async sync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  async truncate(size: number): Promise<void> {
    try {
      await this.fh.truncate(size);
    } catch (err) {
      throw fromSystemError(err, this.path, 'image');
    }
  }

  async close(): Promise<void> {
    await this.#durable.close();
    await this.fh.close();
  }
}

/** Real files (fs/promises only: the daemon serving FUSE must never block). */
export const nodeIo: ConvIo = {
  async open(path: string): Promise<ConvFile> {
    try {
      return new NodeFile(await open(path, constants.O_RDWR), path);
    } catch (err) {
      throw fromSystemError(err, path, 'image');
    }
  },
};
