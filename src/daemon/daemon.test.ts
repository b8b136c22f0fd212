import { describe, expect, it } from 'vitest';
import { parseConfig } from './config.js';
import { parseEnvelope } from './protocol.js';
import { humanLogLine } from './server.js';

describe('configuration', () => {
  it('accepts the documented forms with their defaults', () => {
    const c = parseConfig(
      {
        volumes: [
          { name: 'a', image: '/i/a.img' },
          {
            name: 'b',
            image: '/i/b.img',
            key: { kek: 'file:/k' },
            loop: true,
            mount: { path: '/m' },
            encrypt: true,
          },
          {
            name: 'c',
            image: '/i/c.img',
            header: '/i/c.hdr',
            key: { keyFile: '/k/c' },
            readOnly: true,
            encrypt: false,
          },
        ],
      },
      'v.json',
    );
    expect(c.volumes).toEqual([
      {
        name: 'a',
        image: '/i/a.img',
        key: { type: 'platform' },
        readOnly: false,
        loop: false,
        encrypt: false,
      },
      {
        name: 'b',
        image: '/i/b.img',
        key: { type: 'kek', uri: 'file:/k' },
        readOnly: false,
        loop: true,
        mount: { path: '/m', fstype: 'ext4' },
        encrypt: true,
      },
      {
        name: 'c',
        image: '/i/c.img',
        header: '/i/c.hdr',
        key: { type: 'keyFile', path: '/k/c' },
        readOnly: true,
        loop: false,
        encrypt: false,
      },
    ]);
  });

  it('encrypting at open is off unless asked, and never with a detached header', () => {
    const one = (v: object): unknown =>
      parseConfig({ volumes: [{ name: 'a', image: '/i/a.img', ...v }] }, 'v.json');
    expect(one({})).toMatchObject({ volumes: [{ encrypt: false }] });
    expect(one({ encrypt: true })).toMatchObject({ volumes: [{ encrypt: true }] });
    expect(() => one({ encrypt: true, header: '/i/a.hdr' })).toThrow(
      /volumes\[0\]\.encrypt: .*atrest encrypt IMAGE --header FILE/,
    );
    expect(one({ encrypt: false, header: '/i/a.hdr' })).toMatchObject({ volumes: [{ encrypt: false }] });
  });

  it('open requests carry encrypt only when asked', () => {
    const open = { op: 'open', image: '/i', name: 'n' };
    expect(parseEnvelope({ id: 1, request: { ...open, encrypt: true } }).request).toMatchObject({
      encrypt: true,
    });
    expect(parseEnvelope({ id: 1, request: { ...open, encrypt: 'yes' } }).request).not.toHaveProperty(
      'encrypt',
    );
    expect(parseEnvelope({ id: 1, request: open }).request).not.toHaveProperty('encrypt');
  });

  it('reports every problem, one line each, naming where it is', () => {
    let message = '';
    try {
      parseConfig(
        {
          volumes: [
            { name: 'x', image: '/a', readOnly: 'yes' },
            { name: 'x', image: '/a', foo: 1 },
          ],
          bar: 2,
        },
        'v.json',
      );
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message.split('\n')).toEqual([
      'configuration v.json has 5 problem(s):',
      '  v.json: unknown field "bar" at the top level',
      '  v.json: volumes[0].readOnly: must be true or false',
      '  v.json: volumes[1]: unknown field "foo"',
      '  v.json: volumes[1].name: "x" is also volumes[0].name',
      '  v.json: volumes[1].image: also volumes[0].image',
    ]);
  });
});

describe('control protocol', () => {
  it('parses reencrypt and convert requests and refuses bad ones', () => {
    expect(
      parseEnvelope({ id: 1, request: { op: 'reencrypt', name: 'v', keyFiles: ['/k'], maxRate: 100 } }),
    ).toEqual({
      id: 1,
      request: { op: 'reencrypt', name: 'v', keyFiles: ['/k'], maxRate: 100 },
    });
    expect(parseEnvelope({ id: 2, request: { op: 'convert', name: 'v', action: 'pause' } }).request).toEqual({
      op: 'convert',
      name: 'v',
      action: 'pause',
    });
    expect(() => parseEnvelope({ id: 3, request: { op: 'convert', name: 'v', action: 'stop' } })).toThrow(
      /pause or resume/,
    );
  });
});

describe('logs', () => {
  it('turn pino JSON into a human line on a terminal', () => {
    const line = humanLogLine(
      JSON.stringify({
        level: 40,
        time: '2026-11-29T03:00:00.123Z',
        pid: 1,
        msg: 'volume locked',
        volume: 'v',
        n: 2,
      }),
    );
    expect(line).toBe('03:00:00.123 WARN  volume locked  volume=v n=2');
    expect(humanLogLine('not json')).toBe('not json');
  });
});
