// Unit test of scripts/check-imports.mjs: finds planted cycles and imports against the layers, and none in src/.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { checkImports, formatFindings } from './check-imports.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const script = join(here, 'check-imports.mjs');
const realSrc = join(here, '..', 'src');

let dirs = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

/** A src tree in a temp dir from { 'layer/file.ts': 'text' }. */
function tree(files) {
  const root = mkdtempSync(join(tmpdir(), 'atrest-imports-'));
  dirs.push(root);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, name)), { recursive: true });
    writeFileSync(join(root, name), text);
  }
  return root;
}

describe('check-imports', () => {
  it('reports a value import cycle as a path a -> b -> a', () => {
    const root = tree({
      'keys/a.ts': "import { b } from './b.js';\nexport const a = 1 + b;\n",
      'keys/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
      'keys/c.ts': "import { a } from './a.js';\nexport const c = a;\n",
    });
    const r = checkImports(root);
    expect(r.cycles.map((c) => c.path.join(' -> '))).toEqual(['keys/a.ts -> keys/b.ts -> keys/a.ts']);
    expect(r.cycles[0].typeEdges).toEqual([]);
    expect(r.upward).toEqual([]);
  });

  it('counts type-only imports, export-from and dynamic import() for cycles, and names the type-only edges', () => {
    const root = tree({
      'fuse/serve.ts':
        "import { k } from './kernel/index.js';\nexport interface Disk { n: number }\nexport { k };\n",
      'fuse/kernel/index.ts': "export { session } from './session.js';\n",
      'fuse/kernel/session.ts':
        "import type { Disk } from '../serve.js';\nexport const session = (d: Disk) => d;\n",
      'luks2/x.ts': "export const x = async () => (await import('./y.js')).y;\n",
      'luks2/y.ts': "import { x } from './x.js';\nexport const y = x;\n",
    });
    const paths = checkImports(root).cycles.map((c) => c.path.join(' -> '));
    expect(paths).toEqual([
      'fuse/kernel/index.ts -> fuse/kernel/session.ts -> fuse/serve.ts -> fuse/kernel/index.ts',
      'luks2/x.ts -> luks2/y.ts -> luks2/x.ts',
    ]);
    expect(checkImports(root).cycles[0].typeEdges).toEqual(['fuse/kernel/session.ts -> fuse/serve.ts']);
  });

  it('reports imports up or across the layers, import type included', () => {
    const root = tree({
      'errors/index.ts': 'export class E extends Error {}\n',
      'crypto/xts.ts':
        "import { E } from '../errors/index.js';\nimport type { K } from '../keys/k.js';\nexport type X = K | E;\n",
      'keys/k.ts': "import { v } from '../volume/v.js';\nexport const k = v;\nexport type K = number;\n",
      'volume/v.ts': "import { E } from '../errors/index.js';\nexport const v = E;\n",
      'fuse/f.ts':
        "import { d } from '../daemon/d.js';\nimport { v } from '../volume/v.js';\nexport const f = [d, v];\n",
      'daemon/d.ts': "import { k } from '../keys/k.js';\nexport const d = k;\n",
      'cli/c.ts':
        "import { f } from '../fuse/f.js';\nimport { d } from '../daemon/d.js';\nexport const c = [f, d];\n",
    });
    const r = checkImports(root);
    expect(r.cycles).toEqual([]);
    expect(r.upward).toEqual([
      "crypto/xts.ts -> keys/k.ts (import type '../keys/k.js': crypto/ may not import keys/)",
      "fuse/f.ts -> daemon/d.ts ('../daemon/d.js': fuse/ may not import daemon/)",
      "keys/k.ts -> volume/v.ts ('../volume/v.js': keys/ may not import volume/)",
    ]);
  });

  it('lets cli/ into daemon/ only through the narrow door (talking to, running, configuring the daemon)', () => {
    const root = tree({
      'daemon/client.ts': 'export const request = 1;\n',
      'daemon/protocol.ts': 'export interface Req { n: number }\n',
      'daemon/conversion.ts': 'export const openConversion = 2;\n',
      'volume/v.ts': 'export const v = 3;\n',
      'cli/main.ts':
        "import { request } from '../daemon/client.js';\nimport type { Req } from '../daemon/protocol.js';\n" +
        "import { v } from '../volume/v.js';\nexport const m = (r: Req) => [request, v, r];\n",
      'cli/convert.ts':
        "import { openConversion } from '../daemon/conversion.js';\nexport const c = openConversion;\n",
    });
    const r = checkImports(root);
    expect(r.upward).toEqual([]);
    expect(r.narrow).toEqual([
      "cli/convert.ts -> daemon/conversion.ts ('../daemon/conversion.js': cli/ may import from daemon/ only " +
        'daemon/audit.ts, daemon/client.ts, daemon/config.ts, daemon/paths.ts, daemon/protocol.ts, daemon/server.ts, ' +
        'daemon/unreachable-grace.ts)',
    ]);
    expect(formatFindings(r)[0]).toBe('1 import(s) past a narrow door (NARROW):');
  });

  it('ignores test files, packages, comments and strings; flags files outside a layer and names resolving to nothing', () => {
    const root = tree({
      'errors/index.ts': "// import { c } from '../cli/c.js';\nexport const s = \"import('../cli/c.js')\";\n",
      'errors/index.test.ts':
        "import { c } from '../cli/c.js';\nimport { s } from './index.js';\nexport { c, s };\n",
      'errors/h.test-helper.ts': "import { c } from '../cli/c.js';\nexport { c };\n",
      'cli/c.ts':
        "import { readFile } from 'node:fs/promises';\nimport { s } from '../errors/index.js';\nexport const c = [readFile, s];\n",
      'top.ts': 'export const t = 1;\n',
      'cli/gone.ts': "import { z } from './nowhere.js';\nexport const g = z;\n",
    });
    const r = checkImports(root);
    expect(r.cycles).toEqual([]);
    expect(r.upward).toEqual([]);
    expect(r.unplaced).toEqual([
      'top.ts: not in a layer folder (errors, crypto, luks2, keys, volume, fuse, daemon, cli)',
    ]);
    expect(r.unresolved).toEqual(["cli/gone.ts: './nowhere.js' names no file"]);
  });

  it('exits 1 with the list on a bad tree, 0 on a clean one', { timeout: 120_000 }, () => {
    const bad = tree({
      'keys/a.ts': "import { b } from './b.js';\nexport const a = b;\n",
      'keys/b.ts':
        "import { a } from './a.js';\nimport { v } from '../volume/v.js';\nexport const b = [a, v];\n",
      'volume/v.ts': 'export const v = 1;\n',
    });
    const r = spawnSync(process.execPath, [script, bad], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('1 import cycle(s) among src/ files:\n  keys/a.ts -> keys/b.ts -> keys/a.ts');
    expect(r.stderr).toContain("keys/b.ts -> volume/v.ts ('../volume/v.js': keys/ may not import volume/)");
    const clean = tree({ 'volume/v.ts': 'export const v = 1;\n' });
    expect(execFileSync(process.execPath, [script, clean], { encoding: 'utf8' })).toContain(
      'no import cycle',
    );
  });

  it('finds no cycle and no import against the layers in src/', { timeout: 120_000 }, () => {
    expect(formatFindings(checkImports(realSrc))).toEqual([]);
  });
});
