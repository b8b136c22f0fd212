// Foreign on-disk signatures (LVM2 label, filesystems, partition tables, RAID) where a LUKS2 header repair would write: like cryptsetup's blkid probe before auto-recovery.
import { Buffer } from 'node:buffer';
import type { FileHandle } from 'node:fs/promises';
import { LUKS2_MAGIC_PRIMARY } from './binary-header.js';

interface Probe {
  what: string;
  offset: number;
  match(b: Buffer): boolean;
}

const at = (b: Buffer, off: number, text: string): boolean =>
  b.length >= off + text.length && b.toString('latin1', off, off + text.length) === text;

const PROBES: Probe[] = [
  ...[0, 1, 2, 3].map((s): Probe => ({
    what: `an LVM2 physical volume label (sector ${s})`,
    offset: s * 512,
    match: (b) => at(b, s * 512, 'LABELONE') && at(b, s * 512 + 24, 'LVM2 001'),
  })),
  { what: 'an XFS filesystem', offset: 0, match: (b) => at(b, 0, 'XFSB') },
  { what: 'an NTFS filesystem', offset: 3, match: (b) => at(b, 3, 'NTFS    ') },
  {
    what: 'a FAT filesystem',
    offset: 54,
    match: (b) => b[510] === 0x55 && b[511] === 0xaa && (at(b, 54, 'FAT1') || at(b, 82, 'FAT32   ')),
  },
  { what: 'a GPT partition table', offset: 512, match: (b) => at(b, 512, 'EFI PART') },
  {
    what: 'a DOS partition table',
    offset: 446,
    match: (b) => {
      if (
        b.length < 512 ||
        b[510] !== 0x55 ||
        b[511] !== 0xaa ||
        at(b, 0, LUKS2_MAGIC_PRIMARY.toString('latin1'))
      )
        return false;
      const entries = [0, 1, 2, 3].map((i) => b.subarray(446 + 16 * i, 462 + 16 * i));
      return entries.every((e) => e[0] === 0 || e[0] === 0x80) && entries.some((e) => e[4] !== 0);
    },
  },
  {
    what: 'an ext2/3/4 filesystem',
    offset: 1080,
    match: (b) => b.length >= 1082 && b.readUInt16LE(1080) === 0xef53 && b.readUInt32LE(1048) <= 6,
  },
  {
    what: 'a swap area',
    offset: 4086,
    match: (b) => at(b, 4086, 'SWAPSPACE2') || at(b, 4086, 'SWAP-SPACE'),
  },
  ...[0, 4096].map((off): Probe => ({
    what: `a Linux MD RAID superblock (offset ${off})`,
    offset: off,
    match: (b) => b.length >= off + 4 && b.readUInt32LE(off) === 0xa92b4efc,
  })),
  { what: 'an ISO 9660 filesystem', offset: 32769, match: (b) => at(b, 32769, 'CD001') },
  { what: 'a btrfs filesystem', offset: 65600, match: (b) => at(b, 65600, '_BHRfS_M') },
];

/**
 * The first foreign signature found in the first `span` bytes of the file (where rewriting both LUKS2
 * header copies would write), or null.
 */
export async function foreignSignature(fh: FileHandle, span: number): Promise<string | null> {
  const need = Math.min(span, 65600 + 8);
  const buf = Buffer.alloc(need);
  const { bytesRead } = await fh.read(buf, 0, need, 0);
  const b = buf.subarray(0, bytesRead);
  const found = PROBES.find((p) => p.offset < span && p.match(b));
  return found === undefined ? null : found.what;
}
