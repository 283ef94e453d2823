// Validation of every incoming message against the JSON Schemas in schemas/.
// `make build` precompiles them to plain code (validators.gen.js, ajv's
// standalone output), so a helper never compiles a schema at start; without
// that file (a bare tsc build) ajv compiles each on first use, same options.
import type { ErrorObject, ValidateFunction } from 'ajv';
import paramsSchema from './schemas/params.json';
import requestSchema from './schemas/request.json';

export const METHODS = ['hello', 'acquire', 'try', 'block', 'release', 'status', 'list'] as const;
export type Method = (typeof METHODS)[number];

let ajv: import('ajv').default | undefined;
let cache: Map<string, ValidateFunction> | undefined;

function loadPrecompiled(): Map<string, ValidateFunction> {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional generated file, absent in a bare tsc build
    return new Map(Object.entries(require('./validators.gen') as Record<string, ValidateFunction>));
  } catch {
    return new Map();
  }
}

function compiled(key: string): ValidateFunction {
  cache ??= loadPrecompiled();
  let v = cache.get(key);
  if (!v) {
    if (!ajv) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- ajv is loaded only when the precompiled validators are missing
      const Ajv = (require('ajv') as typeof import('ajv')).default;
      ajv = new Ajv({ strict: false, allErrors: false });
      ajv.addSchema(paramsSchema);
    }
    v = key === 'request' ? ajv.compile(requestSchema) : ajv.getSchema(`hostlock:params#/${key}`)!;
    cache.set(key, v);
  }
  return v;
}

// Null when valid, else a sentence naming the first problem.
export function checkRequest(msg: unknown): string | null {
  const v = compiled('request');
  return v(msg) ? null : describe(v.errors, 'request');
}

export function checkParams(method: Method, params: unknown): string | null {
  const v = compiled(method === 'try' ? 'acquire' : method);
  return v(params) ? null : describe(v.errors, 'params');
}

function describe(errors: ErrorObject[] | null | undefined, root: string): string {
  const e = errors?.[0];
  if (!e) return `invalid ${root}`;
  const where = root + e.instancePath.replace(/\//g, '.');
  switch (e.keyword) {
    case 'oneOf':
    case 'not':
    case 'required':
      if (e.keyword === 'required')
        return `${where} is missing "${(e.params as { missingProperty: string }).missingProperty}"`;
      return (
        `${where}: give exactly one of "path" (an absolute file) or "name" (with optional "dir"); ` +
        'for release, either "handle" or a run hold by name/path with scope "run"'
      );
    case 'additionalProperties':
      return `${where} has an unknown key "${(e.params as { additionalProperty: string }).additionalProperty}"`;
    case 'enum':
      return `${where} must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
    case 'const':
      return `${where} must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    case 'pattern':
      return `${where} must be an absolute path without NUL bytes`;
    default:
      return `${where} ${e.message ?? 'is invalid'}`;
  }
}
