// docs/PROTOCOL.md is the contract clients are written against: its methods,
// their parameters and its error codes must be exactly what the helper accepts
// (src/schemas/params.json) and sends (ErrorCode).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ErrorCode } from '../src/core/errors';
import { METHODS } from '../src/protocol/validate';
import { ROOT } from './rpc';

interface Schema {
  properties?: Record<string, unknown>;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
}
const doc = readFileSync(join(ROOT, 'docs', 'PROTOCOL.md'), 'utf8');
const params = JSON.parse(readFileSync(join(ROOT, 'src', 'protocol', 'schemas', 'params.json'), 'utf8')) as Record<
  string,
  Schema
> & { $defs: Record<string, Schema> };

function section(title: string): string {
  const start = doc.indexOf(`\n## ${title}\n`);
  assert.notEqual(start, -1, `PROTOCOL.md has no "## ${title}" section`);
  const end = doc.indexOf('\n## ', start + 1);
  return doc.slice(start, end === -1 ? undefined : end);
}

// Each `### \`method\`` subsection of "Methods" and the parameter names it
// documents: the first column of its table, or the keys of its `params {…}` line.
function documentedMethods(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const sub of section('Methods').split('\n### ').slice(1)) {
    const [heading = '', ...body] = sub.split('\n');
    const names = [...heading.matchAll(/`([a-z]+)`/g)].map((m) => m[1] ?? '');
    if (names.length === 0) continue; // e.g. "Notifications"
    const keys = new Set<string>();
    const rows = body.filter((l) => l.startsWith('| `'));
    if (rows.length) {
      for (const r of rows) keys.add(/^\| `([a-z_]+)`/.exec(r)?.[1] ?? r);
    } else {
      const line = body.find((l) => l.startsWith('params')) ?? '';
      const before = line.split('→')[0] ?? '';
      for (const group of before.matchAll(/\{([^}]*)\}/g))
        for (const k of (group[1] ?? '').matchAll(/(?:^|[,|]\s*)([a-z_]+)/g)) keys.add(k[1] ?? '');
    }
    for (const n of names) out.set(n, keys);
  }
  return out;
}

test('PROTOCOL.md documents exactly the methods the helper accepts', () => {
  const documented = [...documentedMethods().keys()].sort();
  assert.deepEqual(documented, [...METHODS].sort());
  const inSchema = Object.keys(params).filter((k) => !k.startsWith('$') && k !== 'description');
  assert.deepEqual(
    [...inSchema, 'try'].sort(),
    [...METHODS].sort(),
    'src/protocol/schemas/params.json and METHODS disagree',
  );
});

test("each method's documented parameters are exactly its schema's properties", () => {
  for (const [method, keys] of documentedMethods()) {
    const schema = params[method === 'try' ? 'acquire' : method];
    assert.ok(schema?.properties, `no schema for ${method}`);
    assert.deepEqual([...keys].sort(), Object.keys(schema.properties).sort(), `parameters of ${method}`);
  }
});

test("PROTOCOL.md's name rule is the schema's: its length bounds and any character, NUL included", () => {
  const row = section('Methods')
    .split('\n')
    .find((l) => l.startsWith('| `name` |'));
  assert.ok(row, 'the acquire table has no `name` row');
  const m = /(\d+)\.\.(\d+) chars/.exec(row);
  assert.ok(m, `no length range in: ${row}`);
  const name = params.$defs.name;
  assert.equal(Number(m[1]), name?.minLength);
  assert.equal(Number(m[2]), name?.maxLength);
  assert.equal(name?.pattern, undefined, 'the schema restricts name characters; say which in PROTOCOL.md');
  assert.match(row, /NUL too/);
});

test('PROTOCOL.md documents exactly the error codes in ErrorCode', () => {
  const documented = [...section('Errors').matchAll(/^\| (-\d+) \|/gm)].map((m) => Number(m[1]));
  assert.ok(documented.length > 0, 'no error table found');
  assert.equal(new Set(documented).size, documented.length, 'an error code is documented twice');
  assert.deepEqual(
    documented.sort((a, b) => a - b),
    Object.values(ErrorCode).sort((a, b) => a - b),
  );
});
