// Why a file with no valid LUKS2 header still looks like a LUKS volume (LUKS magic, a secondary header, LUKS2 JSON), so it is never taken for plaintext.
import { Buffer } from 'node:buffer';
import { LUKS2_MAGIC_PRIMARY, LUKS2_MAGIC_SECONDARY, SECONDARY_OFFSETS } from './binary-header.js';
import { openFile } from './disk.js';

/**
 * Why `path` looks like a LUKS volume even though no valid LUKS2 header was found (a LUKS1 or other
 * LUKS magic, a secondary-header magic, or LUKS2 JSON metadata where it would be), or null. Used to
 * refuse treating a damaged volume as plaintext.
 */
export async function luksRemnants(path: string): Promise<string | null> {
  const fh = await openFile(path, 'r', 'image');
  try {
    const read = async (pos: number, len: number): Promise<Buffer> => {
      const b = Buffer.alloc(len);
      const { bytesRead } = await fh.read(b, 0, len, pos);
      return b.subarray(0, bytesRead);
    };
    const head = await read(0, 6);
    if (head.equals(LUKS2_MAGIC_PRIMARY)) return 'starts with a LUKS header';
    for (const off of [0, ...SECONDARY_OFFSETS]) {
      const magic = await read(off, 6);
      if (off > 0 && magic.equals(LUKS2_MAGIC_SECONDARY))
        return `has a LUKS2 secondary header at offset ${off}`;
      const json = (await read(off + 4096, 4096)).toString('latin1');
      if (json.startsWith('{') && json.includes('"keyslots"') && json.includes('"segments"'))
        return `holds LUKS2 metadata at offset ${off + 4096}`;
    }
    return null;
  } finally {
    await fh.close();
  }
}
