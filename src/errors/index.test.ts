import { describe, expect, it } from 'vitest';
import { AtrestError, ERROR_CODES, errnoOf, exitCodeOf, fromSystemError } from './index.js';

describe('errors', () => {
  it('map to stable exit codes and errno names', () => {
    expect(exitCodeOf(new AtrestError('WRONG_KEY', 'x'))).toBe(6);
    expect(exitCodeOf(new Error('boom'))).toBe(70);
    expect(errnoOf(new AtrestError('READ_ONLY', 'x'))).toBe('EROFS');
    expect(errnoOf(Object.assign(new Error('x'), { code: 'ENOSPC' }))).toBe('ENOSPC');
    expect(errnoOf('weird')).toBe('EIO');
  });
  it('keep every exit code in the documented range', () => {
    for (const { exit } of Object.values(ERROR_CODES))
      expect([2, 3, 4, 5, 6, 7, 8, 9, 10, 70]).toContain(exit);
  });
  it('round-trip through JSON for the control socket', () => {
    const e = new AtrestError('IMAGE_BUSY', 'busy', { hint: 'wait', path: '/x' });
    const back = AtrestError.fromJSON(JSON.parse(JSON.stringify(e)) as ReturnType<AtrestError['toJSON']>);
    expect(back.code).toBe('IMAGE_BUSY');
    expect(back.oneLine()).toBe('busy; wait');
    expect(AtrestError.fromJSON({ code: 'NOPE', message: 'm' }).code).toBe('INTERNAL');
  });
  it('translate system errors with the file name', () => {
    const e = fromSystemError(
      Object.assign(new Error('x'), { code: 'ENOENT' }),
      '/a/b',
      'image',
    ) as AtrestError;
    expect(e.code).toBe('FILE_NOT_FOUND');
    expect(e.message).toBe('image /a/b does not exist');
  });
});
