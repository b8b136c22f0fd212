// Keeps key material out of core dumps of the daemon: its unit sets LimitCORE=0; Node cannot set RLIMIT_CORE, so the daemon also empties its coredump_filter.
import { writeFile } from 'node:fs/promises';

/**
 * Core dumps would hold volume keys, KEKs and passphrases from the daemon's memory. The systemd unit
 * sets LimitCORE=0 (no core file at all). Node has no setrlimit(), so a daemon started another way
 * (e.g. `atrest open` starting it, or `atrest daemon` in a shell) keeps its shell's core limit: run
 * it with `ulimit -c 0` or under the unit. What the daemon can do itself is write 0 to
 * /proc/self/coredump_filter: a core dump, if one is still made, then leaves out every memory mapping
 * (heap, stacks, shared memory, files). Children inherit the filter.
 *
 * Returns whether the filter was set (false where /proc is not Linux's or not writable).
 */
export async function excludeMemoryFromCoreDumps(
  filterPath = '/proc/self/coredump_filter',
): Promise<boolean> {
  try {
    await writeFile(filterPath, '0\n');
    return true;
  } catch {
    return false;
  }
}
