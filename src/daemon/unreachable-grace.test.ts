import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { TimeoutError } from './periodic.js';
import {
  classifyCheckFailure,
  DEFAULT_UNREACHABLE_GRACE_MS,
  parseUnreachableGrace,
  UnreachableGrace,
} from './unreachable-grace.js';

function logged(): {
  lines: Array<[string, Record<string, unknown>]>;
  log: { warn: (o: object, m: string) => void; info: (o: object, m: string) => void };
} {
  const lines: Array<[string, Record<string, unknown>]> = [];
  return {
    lines,
    log: {
      warn: (o) => lines.push(['warn', o as Record<string, unknown>]),
      info: (o) => lines.push(['info', o as Record<string, unknown>]),
    },
  };
}

describe('UnreachableGrace (fake clock)', () => {
  it('keeps a volume open for the grace period, warns once per outage, logs recovery, then says lock', () => {
    let now = 1_000_000;
    const { lines, log } = logged();
    const g = new UnreachableGrace<{ name: string }>({ graceMs: 600_000, log, now: () => now });
    const v = { name: 'vol' };
    expect(g.outage(v)).toBeUndefined();
    expect(g.unreachable(v, 'ref:fleet version 1: refused')).toBe(true);
    expect(g.outage(v)).toEqual({
      since: 1_000_000,
      locksAt: 1_600_000,
      detail: 'ref:fleet version 1: refused',
    });
    for (let i = 0; i < 100; i++) {
      now += 5_000; // a check every 5 s for 500 s
      expect(g.unreachable(v, 'ref:fleet version 1: timeout')).toBe(true);
    }
    expect(lines.map(([l, o]) => [l, o.event])).toEqual([['warn', 'key-server-unreachable']]);
    expect(lines[0]?.[1]).toMatchObject({ volume: 'vol', graceMs: 600_000 });
    expect(g.outage(v)?.detail).toBe('ref:fleet version 1: timeout');
    // the server answers again: recovery is logged once, the next outage gets a full grace again
    now += 1_000;
    g.reachable(v);
    g.reachable(v);
    expect(lines.map(([l, o]) => [l, o.event])).toEqual([
      ['warn', 'key-server-unreachable'],
      ['info', 'key-server-reachable'],
    ]);
    expect(lines[1]?.[1]).toMatchObject({ outageMs: 501_000 });
    expect(g.outage(v)).toBeUndefined();
    expect(g.unreachable(v, 'again')).toBe(true);
    now += 599_999;
    expect(g.unreachable(v, 'again')).toBe(true);
    now += 1;
    expect(g.unreachable(v, 'again')).toBe(false); // grace over: lock
    expect(lines.filter(([l]) => l === 'warn')).toHaveLength(2);
  });

  it('outages are per volume object: a reopened volume of the same name starts fresh; 0 locks at once', () => {
    let now = 0;
    const { log } = logged();
    const g = new UnreachableGrace<{ name: string }>({ graceMs: 1000, log, now: () => now });
    const a = { name: 'x' };
    expect(g.unreachable(a, 'd')).toBe(true);
    now = 5000;
    const reopened = { name: 'x' };
    expect(g.unreachable(reopened, 'd')).toBe(true);
    expect(g.unreachable(a, 'd')).toBe(false);
    g.forget(a);
    expect(g.outage(a)).toBeUndefined();
    const none = new UnreachableGrace<{ name: string }>({ graceMs: 0, log, now: () => now });
    expect(none.unreachable(a, 'd')).toBe(false);
    expect(DEFAULT_UNREACHABLE_GRACE_MS).toBe(600_000);
  });

  it('classifies check failures: unreachable server vs revoked/refused/other', () => {
    const unreachable = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5696'), {
      code: 'KEY_SERVER_UNREACHABLE',
    });
    expect(classifyCheckFailure(unreachable, { network: true })).toBe('unreachable');
    expect(classifyCheckFailure(unreachable, undefined)).toBe('unreachable');
    const slow = new TimeoutError('KEK check', 5000);
    expect(classifyCheckFailure(slow, { network: true })).toBe('unreachable');
    // a local provider that hangs locks as before (a hung file system is not a network blip)
    expect(classifyCheckFailure(slow, {})).toBe('unavailable');
    expect(classifyCheckFailure(slow, undefined)).toBe('unavailable');
    expect(classifyCheckFailure(new AtrestError('KEY_UNAVAILABLE', 'revoked'), { network: true })).toBe(
      'unavailable',
    );
    expect(classifyCheckFailure(new AtrestError('KEK_NOT_CONFIGURED', 'gone'), { network: true })).toBe(
      'unavailable',
    );
    expect(classifyCheckFailure(new Error('other'), { network: true })).toBe('unavailable');
    // a server that answers "no" (client certificate refused, a malformed answer) is not a blip
    expect(classifyCheckFailure(new AtrestError('KEY_SERVER_REFUSED', 'refused'), { network: true })).toBe(
      'unavailable',
    );
    expect(classifyCheckFailure(new AtrestError('KEY_SERVER_ERROR', 'garbage'), { network: true })).toBe(
      'unavailable',
    );
  });

  it('validates the grace (seconds, 0 to one day) with a clear USAGE error', () => {
    expect(parseUnreachableGrace(600, '--key-unreachable-grace')).toBe(600_000);
    expect(parseUnreachableGrace('2.5', 'ATREST_KEY_UNREACHABLE_GRACE')).toBe(2500);
    expect(parseUnreachableGrace(0, 'x')).toBe(0);
    for (const bad of [-1, Number.NaN, Infinity, 86_401, 'ten', '', null, true]) {
      expect(() => parseUnreachableGrace(bad, '--key-unreachable-grace')).toThrow(
        expect.objectContaining({
          code: 'USAGE',
          message: expect.stringContaining(
            '--key-unreachable-grace: key-server unreachable grace',
          ) as unknown,
        }) as Error,
      );
    }
  });
});
