import { describe, expect, it } from 'vitest';
import { KmipKekProvider } from './kmip/provider.js';
import type { Pkcs11Provider } from './pkcs11.js';
import { parseProviders } from './provider-config.js';
import { ProviderResolver } from './provider-refs.js';
import type { KekProvider } from './kek.js';

const FILE = '/etc/atrest/providers.json';
const table = parseProviders(
  {
    providers: {
      hsm1: {
        type: 'pkcs11',
        module: '/usr/lib/softhsm/libsofthsm2.so',
        token: 'atrest',
        object: 'kek-1',
        pinSource: '/etc/atrest/hsm1.pin',
      },
      'hsm-nopin': { type: 'pkcs11', module: '/usr/lib/hsm.so', token: 'tok', object: 'k w' },
      'kek-a': { type: 'file', path: '/etc/atrest/kek-a.key' },
      fleet: {
        type: 'kmip',
        host: 'kms.example.com',
        ca: '/etc/atrest/kmip-ca.pem',
        cert: '/etc/atrest/kmip.pem',
        key: '/etc/atrest/kmip.key',
      },
    },
  },
  FILE,
);

/** Providers that only count how often they were asked for: resolving never calls into them. */
function resolver(override?: string): { r: ProviderResolver; used: string[] } {
  const used: string[] = [];
  const fake = (name: string): KekProvider => ({
    scheme: name,
    wrapAlg: name,
    current: () => Promise.reject(new Error(`${name} used`)),
    wrap: () => Promise.reject(new Error(`${name} used`)),
    unwrap: () => Promise.reject(new Error(`${name} used`)),
    available: () => Promise.reject(new Error(`${name} used`)),
  });
  // resolving never connects to a key server
  const kmip = new KmipKekProvider({
    connect: () => {
      throw new Error('kmip used');
    },
  });
  const r = new ProviderResolver({
    table,
    ...(override === undefined ? {} : { override }),
    shared: {
      file: () => (used.push('file'), fake('file')),
      pkcs11: () => (used.push('pkcs11'), fake('pkcs11') as unknown as Pkcs11Provider),
      kmip: () => (used.push('kmip'), kmip),
    },
    platform: () => (used.push('platform'), fake('platform')),
  });
  return { r, used };
}

async function refused(p: Promise<unknown>, code: string, text: RegExp): Promise<string> {
  const err = (await p.then(
    () => null,
    (e: unknown) => e,
  )) as { code?: string; message?: string; hint?: string } | null;
  expect(err).toMatchObject({ code });
  expect(err?.message).toMatch(text);
  return `${err?.message ?? ''}; ${err?.hint ?? ''}`;
}

describe('ProviderResolver: references', () => {
  it('ref:NAME resolves to what providers.json says; tokens store ref:NAME', async () => {
    const { r } = resolver();
    expect(await r.resolve('ref:kek-a', 'image')).toMatchObject({
      stored: 'ref:kek-a',
      name: 'kek-a',
      uri: 'file:/etc/atrest/kek-a.key',
    });
    expect(await r.resolve('ref:hsm1', 'image')).toMatchObject({
      stored: 'ref:hsm1',
      uri: 'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/atrest/hsm1.pin',
    });
    expect((await r.resolve('ref:hsm-nopin', 'image')).uri).toBe(
      'pkcs11:token=tok;object=k%20w?module-path=/usr/lib/hsm.so',
    );
    expect(await r.resolve('platform:', 'image')).toMatchObject({ stored: 'platform:', name: null });
    // the command line may give the bare name
    expect((await r.resolve('kek-a', 'cli')).stored).toBe('ref:kek-a');
  });

  it('kmip: ref:NAME and kmip:NAME name the configured entry; where the server is comes from providers.json', async () => {
    const { r, used } = resolver();
    const ref = await r.resolve('ref:fleet', 'image');
    expect(ref).toMatchObject({ stored: 'ref:fleet', name: 'fleet' });
    expect(ref.uri).toMatch(/^kmip:fleet#[0-9a-f]{12}$/);
    expect(ref.provider).toBeInstanceOf(KmipKekProvider);
    expect(await r.resolve('kmip:fleet', 'cli')).toMatchObject({ stored: 'ref:fleet', uri: ref.uri });
    expect((await r.resolve('kmip:fleet', 'image')).stored).toBe('ref:fleet');
    expect((await r.resolve('fleet', 'cli')).stored).toBe('ref:fleet');
    expect(used).toEqual(['kmip', 'kmip', 'kmip', 'kmip']);
    for (const uri of ['kmip:other', 'kmip://evil.example:5696/fleet', 'kmip:fleet?host=evil.example']) {
      const msg = await refused(r.resolve(uri, 'image'), 'KEK_NOT_CONFIGURED', /matches no provider/);
      expect(msg).toContain('add a provider with exactly this name');
    }
    await refused(
      r.resolve('kmip:other', 'cli'),
      'KEK_NOT_CONFIGURED',
      /--kek "kmip:other" matches no provider/,
    );
  });

  it('an unknown reference is a KEK_NOT_CONFIGURED error saying which file and what entry to add', async () => {
    const { r, used } = resolver();
    const msg = await refused(r.resolve('ref:hsm9', 'image'), 'KEK_NOT_CONFIGURED', /"hsm9"/);
    expect(msg).toContain(`not configured on this host (${FILE})`);
    expect(msg).toContain(`add it to ${FILE}: {"providers": {"hsm9": {"type": "file"`);
    expect(msg).toContain('"type": "pkcs11", "module"');
    expect(msg).toContain('recovery key');
    await refused(r.resolve('hsm9', 'cli'), 'KEK_NOT_CONFIGURED', /key provider "hsm9" is not configured/);
    // a bare name in a token is not a reference; neither is a path-like name
    await refused(r.resolve('kek-a', 'image'), 'KEK_NOT_CONFIGURED', /unknown key provider "kek-a"/);
    await refused(r.resolve('ref:../x', 'image'), 'KEK_NOT_CONFIGURED', /invalid key provider/);
    await refused(r.resolve('vault:k', 'cli'), 'USAGE', /unknown key provider scheme vault/);
    expect(used).toEqual([]);
  });
});

describe('ProviderResolver: legacy full URIs', () => {
  it('a URI whose module, token, object, pin-source or file match a provider exactly resolves to it', async () => {
    const { r } = resolver();
    const legacy = await r.resolve(
      'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/atrest/hsm1.pin',
      'image',
    );
    expect(legacy).toMatchObject({ stored: 'ref:hsm1', name: 'hsm1' });
    // the configured entry is what is used, built from the configuration
    expect(legacy.uri).toBe(
      'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/atrest/hsm1.pin',
    );
    // no pin-source in the token (the PIN came from the command line): the configured one is used
    expect(
      (
        await r.resolve(
          'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so',
          'image',
        )
      ).stored,
    ).toBe('ref:hsm1');
    expect((await r.resolve('file:/etc/atrest/kek-a.key', 'image')).stored).toBe('ref:kek-a');
    expect((await r.resolve('file:///etc/atrest//kek-a.key', 'image')).stored).toBe('ref:kek-a');
  });

  it('anything else is refused before a provider is touched, without naming what the files are', async () => {
    const { r, used } = resolver();
    const cases = [
      'pkcs11:token=atrest;object=kek-1?module-path=/tmp/evil.so',
      'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/shadow',
      'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/root/x',
      'pkcs11:token=other;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so',
      'pkcs11:token=atrest;object=kek-2?module-path=/usr/lib/softhsm/libsofthsm2.so',
      'pkcs11:token=atrest;object=kek-1',
      'pkcs11:token=atrest;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&module-name=x',
      'file:/etc/shadow',
      'file:/etc/atrest/kek-a.key.v2',
      'file:relative',
    ];
    for (const uri of cases) {
      const msg = await refused(r.resolve(uri, 'image'), 'KEK_NOT_CONFIGURED', /matches no provider/);
      expect(msg).toContain('never loads a module or opens a file that an image names');
      expect(msg).not.toMatch(/mode|bytes|does not exist/);
      if (uri.includes('pin-source')) expect(msg).not.toMatch(/\/etc\/shadow|\/root\/x/); // redacted
      expect(msg.split('\n')).toHaveLength(1);
    }
    // a control character in the token cannot break the one-line message
    const nl = await refused(r.resolve('file:/x\n/y', 'image'), 'KEK_NOT_CONFIGURED', /matches no provider/);
    expect(nl.split('\n')).toHaveLength(1);
    expect(used).toEqual([]);
  });

  it("a PIN in a token is never used; root's --kek for the same provider brings its PIN", async () => {
    const { r } = resolver();
    const fromImage = await r.resolve(
      'pkcs11:token=tok;object=k%20w?module-path=/usr/lib/hsm.so&pin-value=0000',
      'image',
    );
    expect(fromImage.uri).not.toContain('pin-value');
    const cli = await r.resolve(
      'pkcs11:token=tok;object=k%20w?module-path=/usr/lib/hsm.so&pin-value=4321',
      'cli',
    );
    expect(cli).toMatchObject({ stored: 'ref:hsm-nopin' });
    expect(cli.uri).toContain('pin-value=4321');
    await refused(
      r.resolve('pkcs11:token=tok;object=k%20w?module-path=/tmp/evil.so&pin-value=4321', 'cli'),
      'KEK_NOT_CONFIGURED',
      /--kek .* matches no provider/,
    );
    const { r: withPin } = resolver(
      'pkcs11:token=tok;object=k%20w?module-path=/usr/lib/hsm.so&pin-value=4321',
    );
    expect((await withPin.resolve('ref:hsm-nopin', 'image')).uri).toContain('pin-value=4321');
    expect((await withPin.resolve('ref:hsm1', 'image')).uri).not.toContain('pin-value');
  });
});
