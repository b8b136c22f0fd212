// Finds FUSE mounts under the run directory that no live server owns (a crashed daemon) and removes them.
import { fuseMounts, unmountStale } from '../fuse/index.js';

/**
 * Called at daemon start, before anything is served: every atrest FUSE mount under runDir is stale.
 * Returns the paths it cleaned.
 */
export async function cleanupStaleMounts(runDir: string): Promise<string[]> {
  const all = await fuseMounts();
  const prefix = runDir.endsWith('/') ? runDir : runDir + '/';
  const stale = all.filter((m) => m.mountPoint.startsWith(prefix));
  const cleaned: string[] = [];
  for (const m of stale.reverse()) {
    await unmountStale(m.mountPoint);
    cleaned.push(m.mountPoint);
  }
  return cleaned;
}
