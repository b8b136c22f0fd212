// Guards for issue 12 (conversion): each on-disk structure, the key wrap and the layout math written once, in the layer that owns it.
import { describe, expect, it } from 'vitest';
import * as volume from '../index.js';
import { filesMatching } from '../../test-helpers/source-files.test-helper.js';

describe('the conversion: one copy of each thing, in its layer', () => {
  it('the progress record format lives in luks2/convert-record.ts only', () => {
    expect(filesMatching(/'ATRCONV1'/)).toEqual(['luks2/convert-record.ts']);
    expect(filesMatching(/\bfunction (encodeRecord|decodeRecord|sectorSums)\b/)).toEqual([
      'luks2/convert-record.ts',
    ]);
  });

  it('the plan token and the requirement flag live in luks2/convert-token.ts only', () => {
    expect(filesMatching(/= 'atrest-convert'/)).toEqual(['luks2/convert-token.ts']);
    expect(filesMatching(/\bfunction (planOf|planToken|markConverting|unmarkConverting)\b/)).toEqual([
      'luks2/convert-token.ts',
    ]);
  });

  it('AES key wrap with padding is one primitive (crypto/key-wrap.ts)', () => {
    expect(filesMatching(/id-aes256-wrap-pad/)).toEqual(['crypto/key-wrap.ts']);
  });

  it('volume/ maps view offsets to XTS tweaks in one place (volume/data-layout.ts)', () => {
    expect(filesMatching(/\/\s*TWEAK_UNIT/).filter((f) => f.startsWith('volume/'))).toEqual([
      'volume/data-layout.ts',
    ]);
  });

  it('the dead conversion helpers are gone', () => {
    for (const name of ['growForConversion', 'ShiftedCipher', 'sourceLayoutCipher']) {
      expect(Object.keys(volume)).not.toContain(name);
      expect(filesMatching(new RegExp(`\\b${name}\\b`))).toEqual([]);
    }
  });
});
