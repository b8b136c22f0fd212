// Finds FUSE mounts under the run directory that no live server owns (a crashed daemon) and removes them.
import { readFile } from 'node:fs/promises';
import { unmountStale } from '../fuse/index.js';

interface MountEntry {
  mountPoint: string;
  fsType: string;
  minor: number;
}

/** Parses /proc/self/mountinfo (octal escapes decoded). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fields = line.slice(0, sep).split(' ');
    const after = line.slice(sep + 3).split(' ');
    const devno = fields[2] ?? '';
    const mp = fields[4];
    const fsType = after[0];
    if (mp === undefined || fsType === undefined) continue;
    out.push({
      mountPoint: mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))),
      fsType,
      minor: Number(devno.split(':')[1] ?? -1),
    });
  }
  return out;
}

/**
 * Called at daemon start, before anything is served: every atrest FUSE mount under runDir is stale.
 * Returns the paths it cleaned.
 */
export async function cleanupStaleMounts(runDir: string): Promise<string[]> {
  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const prefix = runDir.endsWith('/') ? runDir : runDir + '/';
  const stale = mounts.filter((m) => m.fsType.startsWith('fuse') && m.mountPoint.startsWith(prefix));
  const cleaned: string[] = [];
  for (const m of stale.reverse()) {
    await unmountStale(m.mountPoint);
    cleaned.push(m.mountPoint);
  }
  return cleaned;
}
