import { describe, expect, it } from 'vitest';
import { parseMountinfo } from './mounts.js';

describe('mountinfo', () => {
  it('parses mount points with escapes and fs types', () => {
    const text = [
      '36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
      '90 24 0:52 / /run/atrest/my\\040disk rw,nosuid,nodev,relatime shared:50 - fuse.atrest atrest rw,user_id=0,group_id=0',
    ].join('\n');
    expect(parseMountinfo(text)).toEqual([
      { mountPoint: '/mnt1', fsType: 'ext3', source: '/dev/root', minor: 0 },
      { mountPoint: '/run/atrest/my disk', fsType: 'fuse.atrest', source: 'atrest', minor: 52 },
    ]);
  });
});
