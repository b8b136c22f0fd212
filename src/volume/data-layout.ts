// Where a data segment's sectors lie in the image and how they are tweaked: plaintext offset -> image offset and first XTS tweak, for the serving threads (SectorIo) and the converter alike.
import { TWEAK_UNIT } from '../crypto/xts.js';

/**
 * One layout of the plaintext view on the image (a LUKS2 segment's offset, sector_size and iv_tweak):
 * the view's byte `pos` is stored at image byte `offset + pos`, and the sector starting there is
 * encrypted with XTS tweak `pos / 512 + ivTweak` (TWEAK_UNIT: 512-byte units whatever the sector size,
 * as dm-crypt's iv_large_sectors is off for LUKS2). During an in-place conversion the data below the
 * front has its own layout (the source), the rest the volume's (the target).
 *
 * A small mutable class, not a plain object or closures: SectorIo keeps one per side and reloads the
 * source's fields from the shared state per request (a conversion may start while a thread serves),
 * so its hot path allocates nothing, and V8 inlines the two methods.
 */
export class DataLayout {
  constructor(
    /** Image byte offset of the view's byte 0 (the segment offset). */
    public offset: number,
    /** Encryption sector size in bytes: 512, 1024, 2048 or 4096. */
    public readonly sectorSize: number,
    /** Added to every tweak (LUKS2 segment iv_tweak), in 512-byte units. */
    public ivTweak: number,
  ) {}

  /** Image byte offset of the view's byte `pos`. */
  imageOffset(pos: number): number {
    return this.offset + pos;
  }

  /** XTS tweak of the sector that starts at the view's byte `pos` (a multiple of the sector size). */
  firstTweak(pos: number): number {
    return pos / TWEAK_UNIT + this.ivTweak;
  }
}
