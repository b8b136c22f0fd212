import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { ecb } from '@noble/ciphers/aes.js';
import initWabt from 'wabt';
import { describe, expect, it } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { assertXtsKey, SECTOR_SIZES, TWEAK_UNIT, XtsCipher, xtsInPlace } from './xts.js';
import { XTS_KERNEL_WASM_BASE64 } from './xts-kernel-wasm.js';
import { nodeXts } from './node-xts.test-helper.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/**
 * Independent XTS for tests only: AES-128/256 (by key length) from @noble/ciphers (pure JS, not
 * OpenSSL), GF(2^128) doubling on BigInt, one data unit of `unit` bytes per tweak.
 */
function refXts(
  key: Uint8Array,
  data: Uint8Array,
  unit: number,
  tweakStep: number,
  first: bigint,
  enc: boolean,
): Buffer {
  // noble refuses to reuse a cipher instance, so each call gets a fresh one
  const aes = (k: Uint8Array): ReturnType<typeof ecb> => ecb(k, { disablePadding: true });
  const out = Buffer.alloc(data.length);
  const mask128 = (1n << 128n) - 1n;
  const toBig = (b: Uint8Array): bigint => {
    let v = 0n;
    for (let i = 15; i >= 0; i--) v = (v << 8n) | BigInt(b[i] ?? 0);
    return v;
  };
  const toBytes = (v: bigint): Uint8Array => {
    const b = new Uint8Array(16);
    for (let i = 0; i < 16; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
    return b;
  };
  const half = key.length / 2;
  for (let u = 0; u * unit < data.length; u++) {
    let t = toBig(aes(key.subarray(half, key.length)).encrypt(toBytes(first + BigInt(u * tweakStep))));
    const masks: bigint[] = [];
    const pre = new Uint8Array(unit);
    for (let j = 0; j < unit / 16; j++) {
      masks.push(t);
      pre.set(toBytes(toBig(data.subarray(u * unit + 16 * j, u * unit + 16 * j + 16)) ^ t), 16 * j);
      t = ((t << 1n) & mask128) ^ (t >> 127n ? 0x87n : 0n);
    }
    const k1 = aes(key.subarray(0, half));
    const mid = enc ? k1.encrypt(pre) : k1.decrypt(pre);
    masks.forEach((m, j) =>
      out.set(toBytes(toBig(mid.subarray(16 * j, 16 * j + 16)) ^ m), u * unit + 16 * j),
    );
  }
  return out;
}

// IEEE 1619-2007 Annex B, vectors 10-14: XTS-AES-256, one 512-byte data unit, PTX = 00..ff twice.
const IEEE_KEY = hex(
  '2718281828459045235360287471352662497757247093699959574966967627' +
    '3141592653589793238462643383279502884197169399375105820974944592',
);
const IEEE_PTX = Buffer.concat([Buffer.from([...Array(256).keys()]), Buffer.from([...Array(256).keys()])]);
const IEEE_VECTORS: Array<{ name: string; unit: number; ctx: string }> = [
  {
    name: 'vector 10',
    unit: 0xff,
    ctx: `1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44
      680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0
      c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7d
      e8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f
      93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6
      dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1
      505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b
      11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac
      6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493
      c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa
      773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151`,
  },
  {
    name: 'vector 11',
    unit: 0xffff,
    ctx: `77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11e1d0225438e093242d6db274fde801d4
      cae06f2092c728b2478559df58e837c2469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d
      3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b2013fd0eeb8c2b8e3d8d240ccae2d4c9832
      0a7442e1c8d75a42d6e6cfa4c2eca1798d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922a
      aa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c69aac049921871ebb65301a4619ca80ec
      b485a31d744223ce8ddc2394828d6a80470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888a
      bf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab018bfca75ca096f2d531f3d1619e785f1
      ada437cab92e980558b3dce1474afb75bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63
      094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a7e20dbdf308b2461d97c0ec0024a2715
      055249cf3b478ddd4740de654f75ca686e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc090
      54fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803`,
  },
  {
    name: 'vector 12',
    unit: 0xffffff,
    ctx: `e387aaa58ba483afa7e8eb469778317ecf4cf573aa9d4eac23f2cdf914e4e200a8b490e42ee646802dc6ee2b471b2781
      95d60918ececb44bf79966f83faba0499298ebc699c0c8634715a320bb4f075d622e74c8c932004f25b41e361025b5a8
      7815391f6108fc4afa6a05d9303c6ba68a128a55705d415985832fdeaae6c8e19110e84d1b1f199a2692119edc961326
      58f09da7c623efcec712537a3d94c0bf5d7e352ec94ae5797fdb377dc1551150721adf15bd26a8efc2fcaad56881fa9e
      62462c28f30ae1ceaca93c345cf243b73f542e2074a705bd2643bb9f7cc79bb6e7091ea6e232df0f9ad0d6cf50232787
      6d82207abf2115cdacf6d5a48f6c1879a65b115f0f8b3cb3c59d15dd8c769bc014795a1837f3901b5845eb491adfefe0
      97b1fa30a12fc1f65ba22905031539971a10f2f36c321bb51331cdefb39e3964c7ef079994f5b69b2edd83a71ef54997
      1ee93f44eac3938fcdd61d01fa71799da3a8091c4c48aa9ed263ff0749df95d44fef6a0bb578ec69456aa5408ae32c7a
      f08ad7ba8921287e3bbee31b767be06a0e705c864a769137df28292283ea81a2480241b44d9921cdbec1bc28dc1fda11
      4bd8e5217ac9d8ebafa720e9da4f9ace231cc949e5b96fe76ffc21063fddc83a6b8679c00d35e09576a875305bed5f36
      ed242c8900dd1fa965bc950dfce09b132263a1eef52dd6888c309f5a7d712826`,
  },
  {
    name: 'vector 13',
    unit: 0xffffffff,
    ctx: `bf53d2dade78e822a4d949a9bc6766b01b06a8ef70d26748c6a7fc36d80ae4c5520f7c4ab0ac8544424fa405162fef5a
      6b7f229498063618d39f0003cb5fb8d1c86b643497da1ff945c8d3bedeca4f479702a7a735f043ddb1d6aaade3c4a0ac
      7ca7f3fa5279bef56f82cd7a2f38672e824814e10700300a055e1630b8f1cb0e919f5e942010a416e2bf48cb46993d3c
      b6a51c19bacf864785a00bc2ecff15d350875b246ed53e68be6f55bd7e05cfc2b2ed6432198a6444b6d8c247fab941f5
      69768b5c429366f1d3f00f0345b96123d56204c01c63b22ce78baf116e525ed90fdea39fa469494d3866c31e05f295ff
      21fea8d4e6e13d67e47ce722e9698a1c1048d68ebcde76b86fcf976eab8aa9790268b7068e017a8b9b749409514f1053
      027fd16c3786ea1bac5f15cb79711ee2abe82f5cf8b13ae73030ef5b9e4457e75d1304f988d62dd6fc4b94ed38ba831d
      a4b7634971b6cd8ec325d9c61c00f1df73627ed3745a5e8489f3a95c69639c32cd6e1d537a85f75cc844726e8a72fc00
      77ad22000f1d5078f6b866318c668f1ad03d5a5fced5219f2eabbd0aa5c0f460d183f04404a0d6f469558e81fab24a16
      7905ab4c7878502ad3e38fdbe62a41556cec37325759533ce8f25f367c87bb5578d667ae93f9e2fd99bcbc5f2fbba88c
      f6516139420fcff3b7361d86322c4bd84c82f335abb152c4a93411373aaa8220`,
  },
  {
    name: 'vector 14',
    unit: 0xffffffffff,
    ctx: `64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed2350eae7e96087c8a0db51ad290bd00c1a
      c1620857635bf246c176ab463be30b808da548081ac847b158e1264be25bb0910bbc92647108089415d45fab1b3d2604
      e8a8eff1ae4020cfa39936b66827b23f371b92200be90251e6d73c5f86de5fd4a950781933d79a28272b782a2ec313ef
      dfcc0628f43d744c2dc2ff3dcb66999b50c7ca895b0c64791eeaa5f29499fb1c026f84ce5b5c72ba1083cddb5ce45434
      631665c333b60b11593fb253c5179a2c8db813782a004856a1653011e93fb6d876c18366dd8683f53412c0c180f9c848
      592d593f8609ca736317d356e13e2bff3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb482b99453fbe25a41b
      f6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e5613a3b5c2f685b84795cb6e9b2656d8c88157e52c42
      f978d8634c43d06fea928f2822e465aa6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abc
      e19dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a0acdec676fabdf222f07e026f059b672
      b56e5cbc8e1d21bbd867dd927212054681d70ea737134cdfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de
      6975be5e0b4efce51cd3e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9`,
  },
];

function randomKey(bytes: 32 | 64 = 64): Buffer {
  const k = randomBytes(bytes);
  k[0] = (k[bytes / 2] ?? 0) ^ 1; // never equal halves
  return k;
}

// IEEE P1619/D16 (IEEE 1619-2007) Annex B, XTS-AES-128 vectors 1-9 (fixtures/xts-aes-128-ieee1619.json)
interface Aes128Vector {
  name: string;
  key: Buffer;
  unit: number;
  ptx: Buffer;
  ctx: Buffer;
}
const AES128_VECTORS: Aes128Vector[] = (() => {
  const raw = JSON.parse(
    readFileSync(new URL('./fixtures/xts-aes-128-ieee1619.json', import.meta.url), 'utf8'),
  ) as { vectors: Array<{ name: string; key: string; unit: string; ptx: string; ctx: string }> };
  let previous: Buffer = Buffer.alloc(0);
  return raw.vectors.map((v) => {
    const ptx = v.ptx === 'pattern' ? IEEE_PTX : v.ptx === 'previous' ? previous : hex(v.ptx);
    previous = hex(v.ctx);
    return { name: v.name, key: hex(v.key), unit: parseInt(v.unit, 16), ptx, ctx: hex(v.ctx) };
  });
})();
const vector = (name: string): Aes128Vector => {
  const v = AES128_VECTORS.find((x) => x.name === name);
  if (!v) throw new Error(`no ${name}`);
  return v;
};

describe('IEEE 1619-2007 XTS-AES-128 known answers (vectors 1-9)', () => {
  it('has all nine vectors, 1-3 of 32 bytes and 4-9 of 512', () => {
    expect(AES128_VECTORS.map((v) => v.name)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => `vector ${n}`));
    for (const v of AES128_VECTORS) {
      expect(v.key.length).toBe(32);
      expect(v.ptx.length).toBe(v.ctx.length);
    }
  });

  it.each(['vector 4', 'vector 5', 'vector 6', 'vector 7', 'vector 8', 'vector 9'])(
    '%s (512-byte data unit)',
    (name) => {
      const { key, unit, ptx, ctx } = vector(name);
      const data = Buffer.from(ptx);
      xtsInPlace('encrypt', key, data, 512, unit);
      expect(data.toString('hex')).toBe(ctx.toString('hex'));
      xtsInPlace('decrypt', key, data, 512, unit);
      expect(data.equals(ptx)).toBe(true);
      expect(refXts(key, ptx, 512, 1, BigInt(unit), true).equals(ctx)).toBe(true);
    },
  );

  it('vectors 4-6 and 7-9 as runs of three consecutive 512-byte sectors', () => {
    for (const names of [
      ['vector 4', 'vector 5', 'vector 6'],
      ['vector 7', 'vector 8', 'vector 9'],
    ]) {
      const vs = names.map(vector);
      const c = new XtsCipher(vs[0]?.key ?? Buffer.alloc(0));
      const data = Buffer.concat(vs.map((v) => v.ptx));
      c.encryptInPlace(data, 512, vs[0]?.unit ?? -1);
      expect(data.equals(Buffer.concat(vs.map((v) => v.ctx)))).toBe(true);
      c.decryptInPlace(data, 512, vs[0]?.unit ?? -1);
      expect(data.equals(Buffer.concat(vs.map((v) => v.ptx)))).toBe(true);
      c.wipe();
    }
  });

  it('vectors 2 and 3 (32-byte data units) check the reference used below', () => {
    for (const name of ['vector 2', 'vector 3']) {
      const { key, unit, ptx, ctx } = vector(name);
      expect(refXts(key, ptx, 32, 1, BigInt(unit), true).equals(ctx)).toBe(true);
      expect(refXts(key, ctx, 32, 1, BigInt(unit), false).equals(ptx)).toBe(true);
    }
  });

  it('vector 1 has key1 = key2 (all zeros): the reference matches it, atrest refuses it with WEAK_KEY', () => {
    const { key, unit, ptx, ctx } = vector('vector 1');
    expect(refXts(key, ptx, 32, 1, BigInt(unit), true).equals(ctx)).toBe(true);
    expect(() => new XtsCipher(key)).toThrow(expect.objectContaining({ code: 'WEAK_KEY' }));
    expect(() => xtsInPlace('encrypt', key, Buffer.alloc(512), 512, 0)).toThrow(
      expect.objectContaining({ code: 'WEAK_KEY' }),
    );
  });
});

/** Three-sector runs at tweaks around 2^32 and 2^40 under `key` agree with the @noble/ciphers-based reference, both ways. */
function matchesRefXts(key: Buffer, sectorSize: number): void {
  const c = new XtsCipher(key);
  const step = sectorSize / TWEAK_UNIT;
  for (const first of [0, 1, 2 ** 32 - step, 2 ** 40 + 3]) {
    const plain = randomBytes(sectorSize * 3);
    const data = Buffer.from(plain);
    c.encryptInPlace(data, sectorSize, first);
    expect(data.equals(refXts(key, plain, sectorSize, step, BigInt(first), true))).toBe(true);
    expect(refXts(key, data, sectorSize, step, BigInt(first), false).equals(plain)).toBe(true);
    c.decryptInPlace(data, sectorSize, first);
    expect(data.equals(plain)).toBe(true);
  }
  c.wipe();
}

/** Random runs of every sector size, across the 64 KiB chunk boundary and large tweaks, agree with Node's native XTS. */
function matchesNodeXts(key: Buffer): void {
  const c = new XtsCipher(key);
  for (const sectorSize of SECTOR_SIZES) {
    for (const sectors of [1, 2, 127, 128, 129, 300]) {
      if (sectors * sectorSize > 600 * 1024) continue;
      for (const first of [0, 8, 2 ** 32 - 1, 2 ** 52 + 8]) {
        const plain = randomBytes(sectors * sectorSize);
        const data = Buffer.from(plain);
        c.encryptInPlace(data, sectorSize, first);
        expect(data.equals(nodeXts(key, plain, sectorSize, first))).toBe(true);
        c.decryptInPlace(data, sectorSize, first);
        expect(data.equals(plain)).toBe(true);
      }
    }
  }
  c.wipe();
}

describe('XTS-AES-128 (256-bit keys) against independent implementations', () => {
  it.each(SECTOR_SIZES.map((s) => [s]))('%i-byte sectors match @noble/ciphers-based XTS', (sectorSize) => {
    matchesRefXts(randomKey(32), sectorSize);
  });

  it('matches Node’s native aes-128-xts on random data across chunk boundaries, sizes and tweaks', () => {
    matchesNodeXts(randomKey(32));
  });
});

describe('IEEE 1619-2007 XTS-AES-256 known answers', () => {
  it.each(IEEE_VECTORS)('$name (512-byte data unit)', ({ unit, ctx }) => {
    const expected = hex(ctx);
    expect(expected.length).toBe(512);
    const data = Buffer.from(IEEE_PTX);
    xtsInPlace('encrypt', IEEE_KEY, data, 512, unit);
    expect(data.toString('hex')).toBe(expected.toString('hex'));
    xtsInPlace('decrypt', IEEE_KEY, data, 512, unit);
    expect(data.equals(IEEE_PTX)).toBe(true);
    // the test-only reference agrees with the standard too
    expect(refXts(IEEE_KEY, IEEE_PTX, 512, 1, BigInt(unit), true).equals(expected)).toBe(true);
  });

  it('vectors 10 and 11 as one run of two 512-byte sectors is not how tweaks step (control)', () => {
    // sectors of one run step by 1; vector 11's unit (0xffff) is not vector 10's + 1, so a run
    // starting at 0xff must give vector 10 then the encryption of unit 0x100
    const data = Buffer.concat([IEEE_PTX, IEEE_PTX]);
    xtsInPlace('encrypt', IEEE_KEY, data, 512, 0xff);
    expect(data.subarray(0, 512).equals(hex(IEEE_VECTORS[0]?.ctx ?? ''))).toBe(true);
    expect(data.subarray(512).equals(nodeXts(IEEE_KEY, IEEE_PTX, 512, 0x100))).toBe(true);
  });
});

describe('XtsCipher against independent implementations', () => {
  it.each(SECTOR_SIZES.map((s) => [s]))('%i-byte sectors match @noble/ciphers-based XTS', (sectorSize) => {
    matchesRefXts(randomKey(), sectorSize);
  });

  it('matches Node’s native aes-256-xts across chunk boundaries, sizes and tweaks', () => {
    matchesNodeXts(randomKey());
  });

  it('works on views into bigger buffers and leaves bytes outside the view alone', () => {
    const key = randomKey();
    const big = randomBytes(8192 + 32);
    const copy = Buffer.from(big);
    const view = big.subarray(16, 16 + 8192);
    xtsInPlace('encrypt', key, view, 4096, 5);
    expect(big.subarray(0, 16).equals(copy.subarray(0, 16))).toBe(true);
    expect(big.subarray(16 + 8192).equals(copy.subarray(16 + 8192))).toBe(true);
    expect(Buffer.from(view).equals(nodeXts(key, copy.subarray(16, 16 + 8192), 4096, 5))).toBe(true);
  });
});

describe('keys and runs are checked', () => {
  it('refuses a key whose halves are equal with WEAK_KEY', () => {
    const half = randomBytes(32);
    const weak = Buffer.concat([half, half]);
    for (const f of [
      () => assertXtsKey(weak),
      () => new XtsCipher(weak),
      () => xtsInPlace('encrypt', weak, Buffer.alloc(512), 512, 0),
    ]) {
      expect(f).toThrow(AtrestError);
      try {
        f();
      } catch (err) {
        expect((err as AtrestError).code).toBe('WEAK_KEY');
        expect((err as AtrestError).message).not.toContain(half.toString('hex').slice(0, 8));
      }
    }
  });

  it('refuses a 256-bit key whose 128-bit halves are equal with WEAK_KEY', () => {
    const half = randomBytes(16);
    const weak = Buffer.concat([half, half]);
    expect(() => assertXtsKey(weak)).toThrow(expect.objectContaining({ code: 'WEAK_KEY' }));
    expect(() => new XtsCipher(weak)).toThrow(expect.objectContaining({ code: 'WEAK_KEY' }));
    // halves of a 512-bit key that only agree on their first 128 bits are fine
    const k = randomKey(64);
    k.copy(k, 32, 0, 16);
    expect(() => assertXtsKey(k)).not.toThrow();
  });

  it('accepts 256- and 512-bit keys and refuses every other length', () => {
    expect(() => assertXtsKey(randomKey(32))).not.toThrow();
    expect(() => assertXtsKey(randomKey(64))).not.toThrow();
    for (const n of [0, 16, 24, 31, 33, 48, 63, 65, 128]) {
      const k = randomBytes(n);
      if (n > 0) k[0] = (k[n >> 1] ?? 0) ^ 1;
      expect(() => assertXtsKey(k)).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    }
  });

  it('refuses bad sector sizes, partial sectors and bad tweaks', () => {
    const c = new XtsCipher(randomKey());
    expect(() => c.encryptInPlace(Buffer.alloc(512), 256, 0)).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED' }),
    );
    expect(() => c.encryptInPlace(Buffer.alloc(700), 512, 0)).toThrow(
      expect.objectContaining({ code: 'INTERNAL' }),
    );
    for (const t of [-1, 0.5, Number.NaN, 2 ** 53]) {
      expect(() => c.encryptInPlace(Buffer.alloc(512), 512, t)).toThrow(
        expect.objectContaining({ code: 'INTERNAL' }),
      );
    }
    c.encryptInPlace(Buffer.alloc(0), 512, 0);
  });

  it('refuses to run after wipe() with LOCKED', () => {
    const c = new XtsCipher(randomKey());
    c.wipe();
    c.wipe();
    expect(c.wiped).toBe(true);
    expect(() => c.decryptInPlace(Buffer.alloc(512), 512, 0)).toThrow(
      expect.objectContaining({ code: 'LOCKED' }),
    );
  });
});

describe('the committed wasm kernel', () => {
  it('is exactly what xts-kernel.wat compiles to (node scripts/build-wasm.mjs)', async () => {
    const wat = await readFile(new URL('./xts-kernel.wat', import.meta.url), 'utf8');
    const wabt = await initWabt();
    const mod = wabt.parseWat('xts-kernel.wat', wat, { simd: true });
    try {
      mod.validate();
      const bytes = Buffer.from(mod.toBinary({ log: false, write_debug_names: false }).buffer);
      expect(bytes.toString('base64')).toBe(XTS_KERNEL_WASM_BASE64);
    } finally {
      mod.destroy();
    }
  });
});
