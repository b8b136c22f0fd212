// Pins the audit log entry of every key event kind as keyEvent builds it: its fields, values and their order.
import { describe, expect, it } from 'vitest';
import { filesMatching } from '../test-helpers/source-files.test-helper.js';
import { KEY_EVENT_FIELD_ORDER, keyEvent, type KeyEvent, type KeyEventName } from './audit.js';

const vol = { uuid: 'u-1', volume: '/img/a.img' }; // given out of order on purpose
const kek = { kekVersion: 3, keyId: 'k@1', provider: 'ref:cmk' };

/** Each kind with every shape a call site records, as the JSON line content it must stay. */
const SHAPES: Record<KeyEventName, [KeyEvent, string][]> = {
  unlock: [
    [
      keyEvent('unlock', { ...kek, slot: 1, ...vol }),
      '{"event":"unlock","volume":"/img/a.img","uuid":"u-1","slot":1,"provider":"ref:cmk","keyId":"k@1","kekVersion":3}',
    ],
    [
      keyEvent('unlock', { provider: 'passphrase', slot: 2, ...vol }),
      '{"event":"unlock","volume":"/img/a.img","uuid":"u-1","slot":2,"provider":"passphrase"}',
    ],
  ],
  'unlock-failed': [
    [
      keyEvent('unlock-failed', { code: 'KEY_UNAVAILABLE', ...kek, slot: 1, ...vol }),
      '{"event":"unlock-failed","volume":"/img/a.img","uuid":"u-1","slot":1,"provider":"ref:cmk","keyId":"k@1","kekVersion":3,"code":"KEY_UNAVAILABLE"}',
    ],
    [
      keyEvent('unlock-failed', { code: 'WRONG_KEY', provider: 'passphrase', ...vol }),
      '{"event":"unlock-failed","volume":"/img/a.img","uuid":"u-1","provider":"passphrase","code":"WRONG_KEY"}',
    ],
    [
      keyEvent('unlock-failed', { reason: 'no key token', code: 'WRONG_KEY', ...vol }),
      '{"event":"unlock-failed","volume":"/img/a.img","uuid":"u-1","code":"WRONG_KEY","reason":"no key token"}',
    ],
  ],
  wrap: [
    [
      keyEvent('wrap', { ...kek, ...vol, slot: 0 }),
      '{"event":"wrap","volume":"/img/a.img","uuid":"u-1","slot":0,"provider":"ref:cmk","keyId":"k@1","kekVersion":3}',
    ],
  ],
  rotate: [
    [
      keyEvent('rotate', { fromVersion: 2, ...kek, slot: 0, ...vol }),
      '{"event":"rotate","volume":"/img/a.img","uuid":"u-1","slot":0,"provider":"ref:cmk","keyId":"k@1","kekVersion":3,"fromVersion":2}',
    ],
    [
      keyEvent('rotate', { reason: 'reencrypt: new volume key', ...vol }),
      '{"event":"rotate","volume":"/img/a.img","uuid":"u-1","reason":"reencrypt: new volume key"}',
    ],
  ],
  'rotate-platform': [
    [
      keyEvent('rotate-platform', { kekVersion: 2, keyId: 'p@1', provider: 'platform:' }),
      '{"event":"rotate-platform","provider":"platform:","keyId":"p@1","kekVersion":2}',
    ],
  ],
  'delete-platform-version': [
    [
      keyEvent('delete-platform-version', { kekVersion: 1, keyId: 'p@1', provider: 'platform:' }),
      '{"event":"delete-platform-version","provider":"platform:","keyId":"p@1","kekVersion":1}',
    ],
    [
      keyEvent('delete-platform-version', {
        reason: 'confirmed past 1 unseen volume(s): u-1',
        kekVersion: 1,
        keyId: 'p@1',
        provider: 'platform:',
      }),
      '{"event":"delete-platform-version","provider":"platform:","keyId":"p@1","kekVersion":1,"reason":"confirmed past 1 unseen volume(s): u-1"}',
    ],
  ],
  'use-kek': [
    [
      keyEvent('use-kek', { kekVersion: 1, provider: 'ref:cmk', slot: 2, ...vol }),
      '{"event":"use-kek","volume":"/img/a.img","uuid":"u-1","slot":2,"provider":"ref:cmk","kekVersion":1}',
    ],
  ],
  'add-recovery': [
    [
      keyEvent('add-recovery', { slot: 1, ...vol }),
      '{"event":"add-recovery","volume":"/img/a.img","uuid":"u-1","slot":1}',
    ],
  ],
  'remove-keyslot': [
    [
      keyEvent('remove-keyslot', { kekVersion: 2, provider: 'platform:', slot: 0, ...vol }),
      '{"event":"remove-keyslot","volume":"/img/a.img","uuid":"u-1","slot":0,"provider":"platform:","kekVersion":2}',
    ],
    [
      keyEvent('remove-keyslot', { kekVersion: undefined, provider: undefined, slot: 1, ...vol }),
      '{"event":"remove-keyslot","volume":"/img/a.img","uuid":"u-1","slot":1}',
    ],
  ],
  revoke: [
    [
      keyEvent('revoke', { kekVersion: 2, provider: 'ref:cmk' }),
      '{"event":"revoke","provider":"ref:cmk","kekVersion":2}',
    ],
    [
      keyEvent('revoke', { kekVersion: undefined, provider: 'ref:cmk' }),
      '{"event":"revoke","provider":"ref:cmk"}',
    ],
  ],
  restore: [
    [
      keyEvent('restore', { kekVersion: 2, provider: 'ref:cmk' }),
      '{"event":"restore","provider":"ref:cmk","kekVersion":2}',
    ],
    [keyEvent('restore', { provider: 'ref:cmk' }), '{"event":"restore","provider":"ref:cmk"}'],
  ],
  lock: [
    [
      keyEvent('lock', {
        reason: 'kek revoked',
        kekVersion: 3,
        provider: 'ref:cmk',
        slot: 1,
        ...vol,
        name: 'a',
      }),
      '{"event":"lock","name":"a","volume":"/img/a.img","uuid":"u-1","slot":1,"provider":"ref:cmk","kekVersion":3,"reason":"kek revoked"}',
    ],
    [
      keyEvent('lock', {
        reason: 'watchdog',
        kekVersion: undefined,
        provider: undefined,
        slot: 0,
        ...vol,
        name: 'a',
      }),
      '{"event":"lock","name":"a","volume":"/img/a.img","uuid":"u-1","slot":0,"reason":"watchdog"}',
    ],
  ],
};

describe('keyEvent', () => {
  for (const [kind, shapes] of Object.entries(SHAPES)) {
    it(`${kind}: the entry's fields, values and order`, () => {
      for (const [entry, json] of shapes) {
        expect(entry.event).toBe(kind);
        expect(JSON.stringify(entry)).toBe(json);
      }
    });
  }

  it('orders every KeyEvent field', () => {
    const every: Record<Exclude<keyof KeyEvent, 'event'>, true> = {
      volume: true,
      uuid: true,
      name: true,
      slot: true,
      provider: true,
      keyId: true,
      kekVersion: true,
      fromVersion: true,
      code: true,
      reason: true,
    };
    expect([...KEY_EVENT_FIELD_ORDER].sort()).toEqual(Object.keys(every).sort());
  });
});

/** Source files of src/ (not tests) that hand an object literal with an `event` straight to an audit sink. */
const HAND_BUILT = /\b(?:audit|auditEvent|NO_AUDIT\))\(\s*\{\s*event\s*:/;

describe('one way to build an audit entry', () => {
  it('the pattern finds a hand-built entry', () => {
    expect(HAND_BUILT.test("this.audit({ event: 'lock', volume })")).toBe(true);
    expect(HAND_BUILT.test("km.auditEvent({\n  event: 'revoke',")).toBe(true);
    expect(HAND_BUILT.test("(opts.audit ?? NO_AUDIT)({ event: 'x' })")).toBe(true);
    expect(HAND_BUILT.test("this.audit(keyEvent('lock', { volume }))")).toBe(false);
  });

  it('no source file builds an audit entry by hand: every one goes through keyEvent', () => {
    expect(filesMatching(HAND_BUILT)).toEqual([]);
  });
});
