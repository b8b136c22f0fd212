// cryptsetup's own LUKS2 header test material (generators, shipped images): `atrest status`/`key list` accept exactly the headers `cryptsetup luksDump` accepts.
import { copyFile, mkdir, mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeAtrestEnv, must, ROOT, run, type AtrestEnv, type RunResult } from './helpers/cli.js';
import { useTempDir } from '../src/test-helpers/temp-dir.test-helper.js';

const FIXTURES = join(ROOT, 'native-test', 'fixtures', 'cryptsetup');
const GENERATORS = join(FIXTURES, 'generators');
const tools = ['cryptsetup', 'jq', 'xxd', 'xz', 'sha256sum'];
const haveTools = (
  await Promise.all(tools.map((t) => run('sh', ['-c', `command -v ${t}`]).catch(() => ({ code: 1 }))))
).every((r) => r.code === 0);

interface Case {
  name: string;
  path: string;
}

type AtrestOutcome =
  | { kind: 'accept' }
  | { kind: 'unsupported' | 'pending-256' | 'reject' | 'crash'; code: string; message: string };

let env: AtrestEnv;

async function pool<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}

/** Runs every generator against `source`, writing its images into a fresh `out` directory (scratch in `work`). */
async function generate(source: string, out: string, work: string): Promise<void> {
  await mkdir(out);
  const scripts = (await readdir(GENERATORS)).filter((f) => /^generate-.*\.sh$/.test(f)).sort();
  await pool(scripts, 4, async (script) => {
    // lib.sh keeps its scratch files in $srcdir/tmp: one private directory per generator (they run
    // four at a time, so each needs a unique name: mkdtemp inside the test's temp dir, not useTempDir)
    const scratch = await mkdtemp(join(work, 'gen-'));
    // generators source lib.sh from the current directory
    await must(
      'bash',
      ['-c', 'cd "$1" && exec bash "./$2" "$3" "$4"', 'generate', GENERATORS, script, out, source],
      {
        env: { ...process.env, srcdir: scratch },
        timeoutMs: 120_000,
      },
    ).catch((err: unknown) => {
      throw new Error(`generator ${script} failed: ${String(err)}`);
    });
    await rm(scratch, { recursive: true, force: true });
  });
}

/** Runs `atrest ARGS` for every job in one Node process (native-test/helpers/atrest-batch.mjs). */
async function atrestBatch(jobs: string[][]): Promise<RunResult[]> {
  const r = await run(process.execPath, [join(ROOT, 'native-test', 'helpers', 'atrest-batch.mjs')], {
    env: env.env,
    input: JSON.stringify(jobs),
    timeoutMs: 600_000,
  });
  if (r.code !== 0) throw new Error(`atrest-batch failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as RunResult[];
}

function outcome(results: RunResult[]): AtrestOutcome {
  for (const r of results) {
    if (r.code === 0) continue;
    let err: { code?: unknown; message?: unknown } | undefined;
    try {
      err = (JSON.parse(r.stdout) as { error?: { code?: unknown; message?: unknown } }).error;
    } catch {
      err = undefined;
    }
    const code = typeof err?.code === 'string' ? err.code : `exit ${r.code}`;
    const message = typeof err?.message === 'string' ? err.message : r.stderr.trim().slice(0, 300);
    if (code === 'INTERNAL' || err === undefined) return { kind: 'crash', code, message };
    if (code === 'UNSUPPORTED' && /volume key is 256 bits/.test(message)) {
      return { kind: 'pending-256', code, message };
    }
    if (code === 'UNSUPPORTED' || code === 'REENCRYPT_IN_PROGRESS')
      return { kind: 'unsupported', code, message };
    return { kind: 'reject', code, message };
  }
  return { kind: 'accept' };
}

describe.skipIf(!haveTools)("cryptsetup's LUKS2 validation material", () => {
  const cases: Case[] = [];
  const dir = useTempDir('atrest-cs-validation-');

  beforeAll(async () => {
    env = await makeAtrestEnv('atrest-cs-validation-env-');
    const valid = join(dir(), 'luks2_valid_hdr.img');
    await must('sh', ['-c', `xz -dc "${join(FIXTURES, 'luks2_valid_hdr.img.xz')}" > "${valid}"`]);
    const twin = join(dir(), 'luks2_valid_hdr_512.img');
    await must('bash', [join(FIXTURES, 'make-512-bit-twin.sh'), valid, twin]);
    await generate(valid, join(dir(), 'gen-256'), dir());
    await generate(twin, join(dir(), 'gen-512'), dir());
    const shipped = join(dir(), 'shipped');
    await mkdir(shipped);
    for (const t of ['luks2_mda_images.tar.xz', 'luks2_header_requirements.tar.xz']) {
      await must('tar', ['-xJf', join(FIXTURES, t), '-C', shipped]);
    }
    const pv = join(shipped, 'blkid-luks2-pv.img');
    await must('sh', ['-c', `xz -dc "${join(FIXTURES, 'blkid-luks2-pv.img.xz')}" > "${pv}"`]);
    await copyFile(valid, join(shipped, 'luks2_valid_hdr.img'));
    await copyFile(twin, join(shipped, 'luks2_valid_hdr_512.img'));
    // made here from the above: the 512-bit twin with the LVM2 label of blkid-luks2-pv.img over its
    // primary header, and the twin cut at its data offset (a header backup: empty data segment)
    const pv512 = join(shipped, 'luks2_valid_hdr_512-lvm-pv-label.img');
    await copyFile(twin, pv512);
    await must('dd', [`if=${pv}`, `of=${pv512}`, 'bs=4096', 'count=1', 'conv=notrunc', 'status=none']);
    const headerOnly = join(shipped, 'luks2_valid_hdr_512-header-only.img');
    await copyFile(twin, headerOnly);
    await truncate(headerOnly, 4 << 20);
    for (const sub of ['gen-256', 'gen-512', 'shipped']) {
      for (const f of (await readdir(join(dir(), sub))).sort())
        cases.push({ name: `${sub}/${f}`, path: join(dir(), sub, f) });
    }
  }, 600_000);

  afterAll(async () => {
    await env?.cleanup();
  });

  it('agrees with cryptsetup luksDump on every case', async () => {
    expect(cases.length).toBeGreaterThan(180);
    // atrest first: it only reads; cryptsetup may repair a damaged copy in place
    const results = await atrestBatch(
      cases.flatMap((c) => [
        ['status', c.path, '--json'],
        ['key', 'list', c.path, '--json'],
      ]),
    );
    const atrest = cases.map((_, i) => outcome(results.slice(2 * i, 2 * i + 2)));
    const cs = await pool(cases, 4, async (c) => {
      const r = await run('cryptsetup', ['luksDump', c.path], { timeoutMs: 60_000 });
      return { accept: r.code === 0, why: r.stderr.trim().split('\n').slice(-1)[0] ?? '' };
    });

    const rows = cases.map((c, i) => ({ name: c.name, cs: cs[i]!, at: atrest[i]! }));
    const disagree = rows.filter(({ cs: c, at }) => {
      if (at.kind === 'crash') return true;
      // a refusal only for a 256-bit volume key (AES-128-XTS) is a disagreement: atrest opens those
      if (at.kind === 'pending-256') return true;
      const atrestAccepts = at.kind === 'accept' || at.kind === 'unsupported';
      return c.accept !== atrestAccepts;
    });
    const describeAt = (a: AtrestOutcome): string =>
      a.kind === 'accept' ? 'accept' : `${a.kind} ${a.code}: ${a.message}`;
    const pending = rows.filter((r) => r.at.kind === 'pending-256' && !disagree.includes(r));
    const unsupported = rows.filter((r) => r.at.kind === 'unsupported' && !disagree.includes(r));
    console.log(
      [
        `${rows.length} cases: ${rows.length - disagree.length} agree with cryptsetup ${(await run('cryptsetup', ['--version'])).stdout.trim()}`,
        `  both accept: ${rows.filter((r) => r.cs.accept && r.at.kind === 'accept').length}`,
        `  both refuse: ${rows.filter((r) => !r.cs.accept && r.at.kind === 'reject').length}`,
        `  valid headers atrest will not serve (UNSUPPORTED/REENCRYPT_IN_PROGRESS): ${unsupported.length}`,
        ...unsupported.map((r) => `    ${r.name}: ${describeAt(r.at)}`),
        `  refused only for a 256-bit volume key (must be none): ${pending.length}`,
        ...pending.map((r) => `    ${r.name}`),
      ].join('\n'),
    );
    if (disagree.length > 0) {
      console.log(
        [
          `DISAGREEMENTS (${disagree.length}):`,
          `${'case'.padEnd(62)} ${'cryptsetup'.padEnd(10)} atrest`,
          ...disagree.map(
            (r) =>
              `${r.name.padEnd(62)} ${(r.cs.accept ? 'accept' : 'refuse').padEnd(10)} ${describeAt(r.at)}`,
          ),
        ].join('\n'),
      );
    }
    expect(
      disagree.map(
        (r) => `${r.name}: cryptsetup ${r.cs.accept ? 'accepts' : 'refuses'}, atrest ${describeAt(r.at)}`,
      ),
    ).toEqual([]);
    // the cases behind the issue, named
    const at = (name: string): AtrestOutcome => rows.find((r) => r.name === name)!.at;
    for (const hole of ['keyslot-missing-digest', 'keyslot-too-many-digests', 'keyslot-invalid-af']) {
      expect(at(`gen-512/luks2-${hole}.img`).kind, hole).toBe('reject');
    }
    expect(at('shipped/luks2_valid_hdr_512-lvm-pv-label.img')).toMatchObject({ code: 'CORRUPT_HEADER' });
    expect((at('shipped/luks2_valid_hdr_512-lvm-pv-label.img') as { message: string }).message).toMatch(
      /LVM2/,
    );
    expect(at('shipped/luks2_valid_hdr_512-header-only.img')).toEqual({ kind: 'accept' });
    expect(at('gen-512/luks2-uint64-max-segment-size.img')).toMatchObject({
      kind: 'unsupported',
      code: 'UNSUPPORTED',
    });
  }, 600_000);

  it('the real atrest binary answers like the batch runner (exit codes, JSON errors)', async () => {
    const twin = cases.find((c) => c.name === 'shipped/luks2_valid_hdr_512.img')!.path;
    const pv = cases.find((c) => c.name === 'shipped/luks2_valid_hdr_512-lvm-pv-label.img')!.path;
    const ok = await env.atrest(['status', twin, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ open: false, encryption: { enabled: true } });
    const list = await env.atrest(['key', 'list', twin]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/8 key slots/);
    const bad = await env.atrest(['status', pv, '--json']);
    expect(bad.code).toBe(5);
    expect(JSON.parse(bad.stdout)).toMatchObject({ error: { code: 'CORRUPT_HEADER' } });
    expect(bad.stderr).toMatch(/LVM2 physical volume label/);
    // a header without its data: status and key list work (above), only open refuses, saying why
    const headerOnly = cases.find((c) => c.name === 'shipped/luks2_valid_hdr_512-header-only.img')!.path;
    expect((await env.atrest(['status', headerOnly])).code).toBe(0);
    const key = join(dir(), 'key');
    await writeFile(key, 'not the passphrase');
    const open = await env.atrest(['open', headerOnly, 'cs-header-only', '--key-file', key], {
      timeoutMs: 120_000,
    });
    expect(open.code, open.stderr).toBe(5);
    expect(open.stderr).toMatch(
      /holds no data: it is 4194304 bytes and its data segment starts at byte 4194304/,
    );
  }, 300_000);
});
