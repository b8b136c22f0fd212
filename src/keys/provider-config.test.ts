import { chmod, chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { AtrestError } from '../errors/index.js';
import { loadProviders, parseProviders } from './provider-config.js';

const dir = useTempDir('atrest-providers-', { perTest: true });

function problems(value: unknown): string[] {
  try {
    parseProviders(value, '/etc/atrest/providers.json');
  } catch (err) {
    expect(err).toBeInstanceOf(AtrestError);
    expect((err as AtrestError).code).toBe('USAGE');
    return (err as AtrestError).message
      .split('\n')
      .slice(1)
      .map((l) => l.replace(/^ {2}\/etc\/atrest\/providers\.json: /, ''));
  }
  throw new Error('expected problems');
}

describe('parseProviders', () => {
  it('reads file and pkcs11 entries, normalising paths', () => {
    const t = parseProviders(
      {
        providers: {
          hsm1: {
            type: 'pkcs11',
            module: '/usr/lib/softhsm//libsofthsm2.so',
            token: 'atrest',
            object: 'kek-1',
            pinSource: '/etc/atrest/hsm1.pin',
          },
          'kek-a': { type: 'file', path: '/etc/atrest/kek-a.key' },
          'no-pin': { type: 'pkcs11', module: '/m.so', token: 't', object: 'o' },
        },
      },
      '/p.json',
    );
    expect(t.path).toBe('/p.json');
    expect([...t.providers.keys()]).toEqual(['hsm1', 'kek-a', 'no-pin']);
    expect(t.providers.get('hsm1')).toEqual({
      name: 'hsm1',
      type: 'pkcs11',
      fields: {
        module: '/usr/lib/softhsm/libsofthsm2.so',
        token: 'atrest',
        object: 'kek-1',
        pinSource: '/etc/atrest/hsm1.pin',
      },
    });
    expect(t.providers.get('kek-a')?.fields).toEqual({ path: '/etc/atrest/kek-a.key' });
    expect(parseProviders({ providers: {} }, '/p.json').providers.size).toBe(0);
  });

  it('reports every problem at once: unknown type, missing and bad fields, bad names', () => {
    expect(
      problems({
        extra: 1,
        providers: {
          v: { type: 'vault', url: 'x' },
          t: { path: '/k' },
          p: { type: 'pkcs11', module: 'relative.so', object: '' },
          f: { type: 'file', path: '/k', module: '/x.so' },
          'bad name': { type: 'file', path: '/k' },
          platform: { type: 'file', path: '/k' },
          n: 'file:/k',
        },
      }),
    ).toEqual([
      'unknown field "extra" at the top level',
      'providers["v"].type: unknown type "vault" (known: file, pkcs11, kmip)',
      'providers["t"].type: missing (known: file, pkcs11, kmip)',
      'providers["p"].module: must be an absolute file path',
      'providers["p"].token: missing (required for type pkcs11)',
      'providers["p"].object: must be a non-empty label',
      'providers["f"]: unknown field "module" for type file (fields: path)',
      'providers["bad name"]: the name must be 1-64 letters, digits, dots, dashes or underscores (not platform, ref, file, pkcs11, kmip)',
      'providers["platform"]: the name must be 1-64 letters, digits, dots, dashes or underscores (not platform, ref, file, pkcs11, kmip)',
      'providers["n"]: must be an object with a "type"',
    ]);
    expect(problems([])).toEqual([
      'the top level must be an object: { "providers": { "NAME": { "type": ... } } }',
    ]);
    expect(problems({ providers: [] })).toEqual(['"providers" must be an object of NAME: { "type": ... }']);
  });

  it('kmip entries: server, TLS files, keyName or uid (not both), port default left to the provider', () => {
    const tls = { ca: '/etc/atrest/ca.pem', cert: '/etc/atrest/c.pem', key: '/etc/atrest/c.key' };
    const t = parseProviders(
      {
        providers: {
          fleet: { type: 'kmip', host: 'kms.example.com', port: 5696, ...tls, keyName: 'fleet-kek' },
          one: { type: 'kmip', host: '10.0.0.5', ...tls, uid: '42' },
        },
      },
      '/p.json',
    );
    expect(t.providers.get('fleet')?.fields).toEqual({
      host: 'kms.example.com',
      port: 5696,
      ...tls,
      keyName: 'fleet-kek',
    });
    expect(t.providers.get('one')?.fields).toEqual({ host: '10.0.0.5', ...tls, uid: '42' });
    expect(
      problems({
        providers: {
          a: { type: 'kmip', host: 'kms; rm -rf /', port: 70000, ca: 'ca.pem', cert: '/c', key: '/k' },
          b: { type: 'kmip', host: 'kms', ...tls, keyName: 'x', uid: '1' },
          c: { type: 'kmip', ...tls, url: 'kmip://x' },
        },
      }),
    ).toEqual([
      'providers["a"].host: must be a host name or address',
      'providers["a"].port: must be a port number',
      'providers["a"].ca: must be an absolute file path',
      'providers["b"]: give keyName (every version of a named key) or uid (one fixed key), not both',
      'providers["c"]: unknown field "url" for type kmip (fields: host, port, ca, cert, key, keyName, uid)',
      'providers["c"].host: missing (required for type kmip)',
    ]);
  });
});

describe('loadProviders', () => {
  const good = JSON.stringify({ providers: { k: { type: 'file', path: '/etc/atrest/k.key' } } });

  it('a missing file is an empty configuration; a good one loads', async () => {
    const missing = await loadProviders(join(dir(), 'none.json'));
    expect(missing.providers.size).toBe(0);
    const p = join(dir(), 'providers.json');
    await writeFile(p, good, { mode: 0o644 });
    expect([...(await loadProviders(p)).providers.keys()]).toEqual(['k']);
  });

  it('refuses a file group or others may write, or that another user owns, saying how to fix it', async () => {
    const p = join(dir(), 'providers.json');
    await writeFile(p, good, { mode: 0o644 });
    await chmod(p, 0o664);
    await expect(loadProviders(p)).rejects.toMatchObject({
      code: 'USAGE',
      message: `refusing provider configuration ${p}: mode 664 lets group or others change it`,
      hint: `fix with: chmod go-w ${p}`,
    });
    await chmod(p, 0o646);
    await expect(loadProviders(p)).rejects.toMatchObject({ code: 'USAGE' });
    await chmod(p, 0o644);
    if (process.getuid?.() === 0) {
      await chown(p, 1234, 0);
      await expect(loadProviders(p)).rejects.toMatchObject({
        code: 'USAGE',
        message: `refusing provider configuration ${p}: owned by uid 1234, not by root`,
        hint: `fix with: chown root: ${p}`,
      });
      await chown(p, 0, 0);
    }
    // a directory others can write lets them replace the file
    const open = join(dir(), 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    await writeFile(join(open, 'providers.json'), good, { mode: 0o644 });
    await expect(loadProviders(join(open, 'providers.json'))).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringContaining('refusing provider configuration directory') as unknown,
    });
  });

  it('bad JSON and bad content are USAGE errors naming the file', async () => {
    const p = join(dir(), 'providers.json');
    await writeFile(p, '{ nope', { mode: 0o600 });
    await expect(loadProviders(p)).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringContaining(`provider configuration ${p} is not valid JSON`) as unknown,
    });
    await writeFile(p, JSON.stringify({ providers: { k: { type: 'kmipx' } } }), { mode: 0o600 });
    await expect(loadProviders(p)).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringContaining('unknown type "kmipx"') as unknown,
    });
  });
});
