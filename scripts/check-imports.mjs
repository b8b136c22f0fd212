#!/usr/bin/env node
// Import check: fails on any import cycle among src/ files and on any import that goes up (or sideways) the layers.
//
// What it reads: every src/**/*.ts file except *.test.ts and *.test-helper.ts (tests may reach across layers to set
// things up). Each file is parsed with the TypeScript parser (already a dev dependency; no regex over source text, so
// comments and strings never count) and its module specifiers are collected from `import ... from '...'`,
// `import '...'`, `export ... from '...'`, dynamic `import('...')` with a literal argument and `typeof import('...')`
// types. Relative specifiers are resolved to files ('./x.js' -> x.ts, as NodeNext writes them); package specifiers
// ('node:fs', 'pino') are outside src/ and ignored. Worker scripts started by URL (`new URL('./worker.js', ...)`) are
// not imports and are not followed.
//
// (a) Cycles. Every import counts, `import type` included: a type-only circle costs nothing at run time (the
//     compiler erases it), but it still means neither module can be read, moved or tested without the other, which is
//     the coupling the layers exist to prevent; and a type import is one refactor away from a value import, when the
//     circle starts to matter at load time (a `const` read before its module ran). Keeping all circles out is cheap
//     because shared types belong in a module of their own anyway. Each cycle is reported as a path a -> b -> a.
//
// (b) Layers. src/ has one folder per layer; a file may import its own folder and any lower layer, never a higher one:
//       errors/ -> crypto/ -> luks2/ -> keys/ | volume/ -> fuse/ -> daemon/ -> cli/
//     keys/ and volume/ are one level and must not import each other (volume sees only unwrapped key bytes; keys never
//     touches the data path). fuse/ sits below daemon/: today daemon/ imports fuse/ (the service mounts volumes through
//     fuse/backend, fuse/mounts, fuse/spawn, and attaches loop devices through fuse/blockdev) and fuse/ imports
//     nothing of daemon/, so the rule that holds is that fuse/
//     (serving one opened volume as a file) never imports daemon/ (the service that decides what to serve), and
//     fuse/ must not import keys/ either: it serves an already opened volume. `import type` counts here too: a layer
//     that names a higher layer's types depends on it. A file directly in src/ or in a folder not listed below is a
//     finding, so a new folder must be given its place.
//
// (c) Narrow doors (NARROW below): a few lower layers may be imported only through some of their files, e.g. cli/
//     reaches daemon/ only to talk to, run and configure the daemon.
//
// Usage: node scripts/check-imports.mjs [srcDir]   (default: src/ next to this script's folder). Exit 0 when clean,
// 1 with a list of findings otherwise. Also exported for the unit test (scripts/check-imports.test.mjs).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

// Folder -> the folders it may import besides itself. Listed explicitly rather than as ranks so that same-level
// folders (keys/volume) are visibly not allowed to see each other.
export const LAYERS = {
  errors: [],
  crypto: ['errors'],
  luks2: ['errors', 'crypto'],
  keys: ['errors', 'crypto', 'luks2'],
  volume: ['errors', 'crypto', 'luks2'],
  fuse: ['errors', 'crypto', 'luks2', 'volume'],
  daemon: ['errors', 'crypto', 'luks2', 'keys', 'volume', 'fuse'],
  cli: ['errors', 'crypto', 'luks2', 'keys', 'volume', 'fuse', 'daemon'],
};

// Narrow doors: where a layer may import only some files of a lower one (src/-relative paths). cli/ uses daemon/ to
// talk to the daemon (client, protocol), to run it (server; config and unreachable-grace for its options and files)
// and for what both share (the runtime paths, the audit log file); the work itself (keys, in-place conversion,
// volumes) it takes from keys/ and volume/ as the daemon does, never through daemon/.
export const NARROW = {
  cli: {
    daemon: [
      'daemon/audit.ts',
      'daemon/client.ts',
      'daemon/config.ts',
      'daemon/paths.ts',
      'daemon/protocol.ts',
      'daemon/server.ts',
      'daemon/unreachable-grace.ts',
    ],
  },
};

const isSource = (name) =>
  name.endsWith('.ts') && !name.endsWith('.d.ts') && !/\.test(-helper)?\.ts$/.test(name);

/** Every checked source file under srcDir, as absolute paths, sorted. */
function listSources(srcDir) {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (isSource(name)) out.push(p);
    }
  };
  walk(srcDir);
  return out;
}

/** The module specifiers one file names, each with whether it is type-only. */
export function specifiersOf(fileName, text) {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found = [];
  const add = (lit, typeOnly) => {
    if (lit && ts.isStringLiteralLike(lit)) found.push({ spec: lit.text, typeOnly });
  };
  const visit = (node) => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const named = clause?.namedBindings;
      const allNamedTypeOnly =
        !!clause &&
        !clause.name &&
        !!named &&
        ts.isNamedImports(named) &&
        named.elements.length > 0 &&
        named.elements.every((e) => e.isTypeOnly);
      add(node.moduleSpecifier, !!clause && (clause.isTypeOnly || allNamedTypeOnly));
    } else if (ts.isExportDeclaration(node)) {
      if (node.moduleSpecifier) add(node.moduleSpecifier, node.isTypeOnly);
    } else if (ts.isImportEqualsDeclaration(node)) {
      if (ts.isExternalModuleReference(node.moduleReference))
        add(node.moduleReference.expression, node.isTypeOnly);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      add(node.arguments[0], false);
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      if (ts.isLiteralTypeNode(arg)) add(arg.literal, true);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

/** Resolves a relative specifier from `fromFile` to a file path, or null when it names a package or nothing. */
function resolveSpecifier(fromFile, spec) {
  if (!spec.startsWith('./') && !spec.startsWith('../')) return null;
  const base = resolve(dirname(fromFile), spec);
  const candidates = [];
  if (/\.(m|c)?js$/.test(base)) candidates.push(base.replace(/\.(m|c)?js$/, (m) => m.replace('js', 'ts')));
  candidates.push(base, `${base}.ts`, join(base, 'index.ts'));
  for (const c of candidates) if (existsSync(c) && statSync(c).isFile()) return c;
  return { unresolved: base };
}

/** The layer folder of a file (first path part under srcDir), or null for a file directly in srcDir. */
function layerOf(srcDir, file) {
  const parts = relative(srcDir, file).split(sep);
  return parts.length > 1 ? parts[0] : null;
}

/** Builds the import graph: Map<file, Array<{ to, typeOnly, spec }>> over source files (paths relative to srcDir). */
export function importGraph(srcDir) {
  const root = resolve(srcDir);
  const files = listSources(root);
  const rel = (p) => relative(root, p).split(sep).join('/');
  const graph = new Map();
  const unresolved = [];
  for (const file of files) {
    const edges = [];
    for (const { spec, typeOnly } of specifiersOf(file, readFileSync(file, 'utf8'))) {
      const target = resolveSpecifier(file, spec);
      if (target === null) continue;
      if (typeof target === 'object') {
        unresolved.push(`${rel(file)}: '${spec}' names no file`);
        continue;
      }
      if (!target.startsWith(root + sep)) continue; // outside src/ (e.g. package.json)
      if (!target.endsWith('.ts')) continue; // data files (.json, .wasm) are not modules of a layer
      const to = rel(target);
      if (!edges.some((e) => e.to === to && e.typeOnly === typeOnly)) edges.push({ to, typeOnly, spec });
    }
    graph.set(rel(file), edges);
  }
  return { graph, unresolved };
}

/** Strongly connected components (Tarjan), each a sorted array of nodes; only those that contain a cycle. */
function cyclicComponents(nodes, next) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const onStack = new Set();
  const stack = [];
  const out = [];
  const strong = (v) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of next(v)) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do {
        w = stack.pop();
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || next(v).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of nodes) if (!idx.has(v)) strong(v);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/**
 * Every elementary cycle within one component, as a node path that returns to its start (a -> b -> a). Each cycle is
 * listed once, starting from its smallest node. Capped, since a dense tangle has exponentially many.
 */
function cyclesIn(comp, next, cap) {
  const members = new Set(comp);
  const cycles = [];
  for (const start of comp) {
    const path = [start];
    const onPath = new Set(path);
    const dfs = (v) => {
      for (const w of next(v)) {
        if (cycles.length >= cap) return;
        if (!members.has(w) || w < start) continue;
        if (w === start) cycles.push([...path, start]);
        else if (!onPath.has(w)) {
          path.push(w);
          onPath.add(w);
          dfs(w);
          path.pop();
          onPath.delete(w);
        }
      }
    };
    dfs(start);
  }
  return cycles;
}

/**
 * All findings for srcDir: { cycles: { path: string[], typeEdges: string[] }[], upward: string[], narrow: string[],
 * unresolved: string[], unplaced: string[] }.
 */
export function checkImports(srcDir, { cycleCap = 200 } = {}) {
  const root = resolve(srcDir);
  const { graph, unresolved } = importGraph(root);
  const next = (v) => [...new Set((graph.get(v) ?? []).map((e) => e.to))].filter((t) => graph.has(t));
  // An edge is type-only when every import of that file from that file is; shown so the reader knows which circles
  // exist only for the compiler.
  const typeOnlyEdge = (a, b) => (graph.get(a) ?? []).filter((e) => e.to === b).every((e) => e.typeOnly);
  const cycles = [];
  for (const comp of cyclicComponents([...graph.keys()], next)) {
    for (const path of cyclesIn(comp, next, cycleCap - cycles.length)) {
      const typeEdges = path
        .slice(1)
        .flatMap((b, i) => (typeOnlyEdge(path[i], b) ? [`${path[i]} -> ${b}`] : []));
      cycles.push({ path, typeEdges });
    }
  }
  const upward = [];
  const narrow = [];
  const unplaced = [];
  for (const [from, edges] of graph) {
    const layer = layerOf(root, join(root, from));
    if (layer === null || !(layer in LAYERS)) {
      unplaced.push(`${from}: not in a layer folder (${Object.keys(LAYERS).join(', ')})`);
      continue;
    }
    for (const { to, typeOnly, spec } of edges) {
      const target = layerOf(root, join(root, to));
      if (target === layer) continue;
      const door = target === null ? undefined : NARROW[layer]?.[target];
      if (door !== undefined && !door.includes(to)) {
        narrow.push(
          `${from} -> ${to} (${typeOnly ? 'import type ' : ''}'${spec}': ${layer}/ may import from ${target}/ only ${door.join(', ')})`,
        );
        continue;
      }
      if (target !== null && LAYERS[layer].includes(target)) continue;
      upward.push(
        `${from} -> ${to} (${typeOnly ? 'import type ' : ''}'${spec}': ${layer}/ may not import ${target}/)`,
      );
    }
  }
  return { cycles, upward, narrow, unresolved, unplaced };
}

/** The report lines for a result; empty when clean. */
export function formatFindings({ cycles, upward, narrow = [], unresolved, unplaced }) {
  const lines = [];
  if (cycles.length) {
    lines.push(`${cycles.length} import cycle(s) among src/ files:`);
    for (const { path, typeEdges } of cycles) {
      const note = typeEdges.length ? `   (import type only: ${typeEdges.join(', ')})` : '';
      lines.push(`  ${path.join(' -> ')}${note}`);
    }
  }
  if (upward.length) {
    lines.push(`${upward.length} import(s) against the layers (${Object.keys(LAYERS).join(' -> ')}):`);
    for (const u of upward) lines.push(`  ${u}`);
  }
  if (narrow.length) {
    lines.push(`${narrow.length} import(s) past a narrow door (NARROW):`);
    for (const n of narrow) lines.push(`  ${n}`);
  }
  if (unplaced.length) {
    lines.push(`${unplaced.length} file(s) outside the layer folders:`);
    for (const u of unplaced) lines.push(`  ${u}`);
  }
  if (unresolved.length) {
    lines.push(`${unresolved.length} relative import(s) that resolve to no file:`);
    for (const u of unresolved) lines.push(`  ${u}`);
  }
  if (lines.length) {
    lines.push(
      'Fix: move what both sides need into a lower module (types and helpers in a file that imports neither).',
    );
  }
  return lines;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const srcDir = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
  const lines = formatFindings(checkImports(srcDir));
  if (lines.length) {
    console.error(lines.join('\n'));
    process.exit(1);
  }
  console.log(
    `check-imports: no import cycle, no import against the layers in ${relative(process.cwd(), srcDir) || '.'}`,
  );
}
