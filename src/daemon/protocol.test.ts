import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { parseEnvelope } from './protocol.js';

describe('control protocol', () => {
  it('accepts well-formed requests', () => {
    expect(parseEnvelope({ id: 1, request: { op: 'ping' } })).toEqual({ id: 1, request: { op: 'ping' } });
    expect(parseEnvelope({ id: 2, request: { op: 'status', name: 'a' } }).request).toEqual({
      op: 'status',
      name: 'a',
    });
    expect(
      parseEnvelope({ id: 3, request: { op: 'open', image: '/i', name: 'n', keyFile: '/k', loop: true } })
        .request,
    ).toEqual({ op: 'open', image: '/i', name: 'n', keyFile: '/k', loop: true, readOnly: false });
  });
  it('refuses malformed ones with USAGE', () => {
    for (const bad of [
      null,
      1,
      {},
      { id: 'x', request: {} },
      { id: 1 },
      { id: 1, request: { op: 'nope' } },
      { id: 1, request: { op: 'open', image: '', name: 'n' } },
      { id: 1, request: { op: 'close' } },
    ]) {
      try {
        parseEnvelope(bad);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(AtrestError);
        expect((err as AtrestError).code).toBe('USAGE');
      }
    }
  });
});
