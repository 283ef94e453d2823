// NODE_EXTRA_CA_CERTS without its cost at every start. Node reads and parses
// the file it names as it starts, before any of our code runs: set to a
// system's bundle of some 140 certificates, as CI runners and corporate
// machines often set it, that takes longer than the rest of Node's start (a
// `node -e 0` of 38 ms becomes one of 85). hostlock needs those certificates
// only for a TLS connection to a server store. So the executable's shell (see
// scripts/build.mjs) takes the variable out of node's environment and passes
// it on as HOSTLOCK_CA=PID:FILE; the executable puts it back first thing,
// so every command it starts sees the environment it was given, and a TLS
// connection that trusts the default CAs trusts Node's bundled ones and the
// file's, as it would have under Node's own handling. With NODE_OPTIONS set,
// which may change Node's default CAs (--use-openssl-ca), or when hostlock is
// started as `node cli.js`, Node handles the variable itself.
import { readFileSync } from 'node:fs';
import { log } from '../core/log';
import { fromPrelude } from './proc';

const KEY = Symbol.for('hostlock.extraCaFile');
const store = globalThis as Record<symbol, unknown>;

// Called once, first thing, by the executable's main.
export function takeExtraCaCerts(): void {
  const file = fromPrelude('HOSTLOCK_CA');
  if (file === undefined || process.env.NODE_EXTRA_CA_CERTS !== undefined) return;
  process.env.NODE_EXTRA_CA_CERTS = file;
  store[KEY] = file;
}

let cas: string[] | undefined;

// The `ca` of a TLS connection that names no CA of its own: undefined when
// Node's defaults are right as they are (Node loaded NODE_EXTRA_CA_CERTS
// itself, or it is not set), else Node's bundled CAs and those of the file the
// executable kept from Node's start. A file that cannot be read is warned
// about and left out, as Node does.
export function defaultCas(): string[] | undefined {
  const file = store[KEY];
  if (typeof file !== 'string') return undefined;
  if (cas) return cas;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- node:tls only for a TLS connection
  const bundled = (require('node:tls') as typeof import('node:tls')).rootCertificates;
  try {
    cas = [...bundled, readFileSync(file, 'latin1')];
  } catch (err) {
    log.warn(`ignoring the extra CA certificates of NODE_EXTRA_CA_CERTS (${file}): ${(err as Error).message}`);
    cas = [...bundled];
  }
  return cas;
}
