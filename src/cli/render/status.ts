// How `atrest status` looks: the table of open volumes, an image that is not open, and their JSON forms.
import type { EncryptionStatus, VolumeStatus } from '../../daemon/protocol.js';
import { formatBytes } from '../size.js';
import { printJson } from './json.js';
import { progressLine } from './progress.js';

function encryptionRows(e: EncryptionStatus): Array<[string, string]> {
  const rows: Array<[string, string]> = [
    ['encryption', e.enabled ? `on, ${e.cipher}` : 'OFF (benchmark only)'],
    ['key source', e.keySource],
  ];
  if (e.kek !== null) rows.push(['KEK', `${e.kek} (version ${e.kekVersion ?? '?'})`]);
  rows.push(['locked', e.locked ? `yes: ${e.lockedReason ?? ''} (since ${e.lockedAt ?? '?'})` : 'no']);
  const u = e.keyServerUnreachable;
  if (u !== undefined)
    rows.push(['WARNING', `key server unreachable since ${u.since}; locks at ${u.locksAt} (${u.detail})`]);
  return rows;
}

function printStatus(list: VolumeStatus[]): void {
  if (list.length === 0) {
    console.log('no open volumes');
    return;
  }
  for (const v of list) {
    console.log(`${v.name}: ${v.diskPath}`);
    const rows: Array<[string, string]> = [
      ['image', v.image],
      ['header', v.header === v.image ? `${v.header} (attached)` : `${v.header} (detached)`],
      ['uuid', v.uuid],
      ['cipher', v.cipher],
      ['sector size', `${v.sectorSize} bytes`],
      ['size', `${formatBytes(v.size)} (${v.size} bytes)`],
      ['key slot', String(v.keyslot)],
      ['mode', v.readOnly ? 'read-only' : 'read-write'],
      ['loop device', v.loopDevice ?? '-'],
      ...(v.fuseBackend === undefined ? [] : ([['fuse backend', v.fuseBackend]] as Array<[string, string]>)),
      ['read', formatBytes(v.bytesRead)],
      ['written', formatBytes(v.bytesWritten)],
      ...encryptionRows(v.encryption),
      ...(v.conversion === undefined
        ? []
        : ([
            [
              v.conversion.mode === 'encrypt' ? 'encrypting' : 're-encrypting',
              `${v.conversion.state}, ${progressLine(v.conversion)}${v.conversion.error ? ` (${v.conversion.error})` : ''}`,
            ],
          ] as Array<[string, string]>)),
    ];
    rows.unshift(['state', v.error === undefined ? v.state : `${v.state}: ${v.error}`]);
    if (v.mountPoint) rows.push(['mounted on', v.mountPoint]);
    for (const [k, val] of rows) console.log(`  ${k.padEnd(12)} ${val}`);
  }
}

/** Open volumes (all, or the ones asked for): a table, or {"volumes": [...]} with --json. */
export function printVolumes(list: VolumeStatus[], json: boolean): void {
  if (json) printJson({ volumes: list });
  else printStatus(list);
}

/** An image that is not open: its encryption settings from its header. */
export function printClosedImage(image: string, encryption: EncryptionStatus, json: boolean): void {
  if (json) printJson({ image, open: false, encryption });
  else {
    console.log(`${image}: not open`);
    for (const [k, val] of encryptionRows(encryption)) console.log(`  ${k.padEnd(12)} ${val}`);
  }
}
