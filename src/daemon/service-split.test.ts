// Guards the split of the volume service by concern (issue 12): each concern has one home, checked on the source text.
import { describe, expect, it } from 'vitest';
import { filesMatching, sourceFiles, sourceText } from '../test-helpers/source-files.test-helper.js';

describe('the volume service, one concern per file', () => {
  it('runs losetup, and mounts and unmounts loop devices, only in fuse/blockdev.ts', () => {
    expect(filesMatching(/spawnHelper\(\s*'losetup'/)).toEqual(['fuse/blockdev.ts']);
    expect(filesMatching(/spawnHelper\(\s*'u?mount'/, { under: 'daemon' })).toEqual([]);
  });

  it('starts and resumes conversions with keys only in daemon/online-conversion.ts', () => {
    const calls = /\b(openConversion|startReencrypt)\(/;
    const definitions = /export async function (openConversion|startReencrypt)\b/;
    const callers = sourceFiles({ under: 'daemon' }).filter((f) =>
      calls.test(sourceText(f).replace(new RegExp(definitions.source, 'g'), '')),
    );
    expect(callers).toEqual(['daemon/online-conversion.ts']);
  });

  it('schedules the KEK check in daemon/key-watch.ts only, on the unwedgeable Periodic', () => {
    expect(filesMatching(/new Periodic\(/, { under: 'daemon' })).toEqual(['daemon/key-watch.ts']);
  });
});
