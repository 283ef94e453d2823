// The tree is the architecture: each folder of src/ is a layer, and a module
// imports only from its own layer or the layers below it (type-only imports
// included), so no import cycle can form between layers, and none within one.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';

const SRC = resolve(__dirname, '..', '..', 'src');

// Lowest first. A layer may import from itself and from any layer before it.
const LAYERS = ['core', 'sys', 'store', 'protocol', 'stores', 'policy', 'server', 'agent', 'cli'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

function resolveImport(from: string, spec: string): string | null {
  const base = resolve(dirname(from), spec);
  for (const candidate of [base + '.ts', join(base, 'index.ts')]) {
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // try the next form
    }
  }
  return null; // JSON, generated code
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import\(|require\()\s*'(\.[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => resolveImport(file, s)).filter((p): p is string => p !== null);
}

const layerOf = (file: string) => relative(SRC, file).split('/')[0]!;
const graph = new Map(sources(SRC).map((f) => [f, importsOf(f)]));

test('every module of src/ is in a layer folder', () => {
  const loose = [...graph.keys()].filter((f) => !LAYERS.includes(layerOf(f))).map((f) => relative(SRC, f));
  assert.deepEqual(loose, [], `put these in one of ${LAYERS.join(', ')}`);
});

test('imports point down the layers', () => {
  const upward: string[] = [];
  for (const [file, deps] of graph) {
    const mine = LAYERS.indexOf(layerOf(file));
    for (const dep of deps) {
      if (LAYERS.indexOf(layerOf(dep)) > mine) upward.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`);
    }
  }
  assert.deepEqual(upward, []);
});

test('stores do not import each other', () => {
  const across: string[] = [];
  for (const [file, deps] of graph) {
    const [top, store] = relative(SRC, file).split('/');
    if (top !== 'stores' || !store?.length || store.endsWith('.ts')) continue;
    for (const dep of deps) {
      const [dtop, dstore] = relative(SRC, dep).split('/');
      if (dtop === 'stores' && dstore !== store) across.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`);
    }
  }
  assert.deepEqual(across, []);
});

test('no import cycles, type-only imports included', () => {
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]) => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') {
      cycles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(SRC, p)).join(' -> '));
      return;
    }
    state.set(f, 'open');
    for (const d of graph.get(f) ?? []) visit(d, [...path, f]);
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f, []);
  assert.deepEqual(cycles, []);
});
