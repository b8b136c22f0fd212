// Unit-test helper (not built into dist/): rewrites the JSON metadata of a LUKS2 header with valid checksums, bypassing validation, to craft bad or unusual headers.
import { open } from 'node:fs/promises';
import { readAt, readHeaders, writeAt, writeHeaders } from './disk.js';
import type { JsonObject } from './json-value.js';

/**
 * Rewrites the JSON of both header copies (or, with `only`, of one: the other keeps its bytes) with
 * `mutate` applied to the chosen copy's JSON; seqid + 1 unless `seqid` says otherwise; fresh salts.
 */
export async function craftHeaderJson(
  path: string,
  mutate: (json: JsonObject) => void,
  opts: { seqid?: bigint; only?: 'primary' | 'secondary' } = {},
): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { chosen } = await readHeaders(fh, path);
    const json = structuredClone(chosen.json);
    mutate(json);
    const keep =
      opts.only === undefined ? null : await readAt(fh, opts.only === 'primary' ? 16384 : 0, 16384);
    await writeHeaders(fh, {
      hdrSize: chosen.bin.hdrSize,
      seqid: opts.seqid ?? chosen.bin.seqid + 1n,
      label: chosen.bin.label,
      subsystem: chosen.bin.subsystem,
      uuid: chosen.bin.uuid,
      checksumAlg: 'sha256',
      salts: { primary: null, secondary: null },
      json,
      jsonSize: chosen.bin.hdrSize - 4096,
    });
    if (keep) await writeAt(fh, opts.only === 'primary' ? 16384 : 0, keep);
  } finally {
    await fh.close();
  }
}
