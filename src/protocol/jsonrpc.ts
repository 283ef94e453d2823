// The JSON-RPC 2.0 envelope: a line becomes a validated request or the error
// to answer it with; results, errors and notifications become lines.
import { ErrorCode, HostlockError, invalidParams } from '../core/errors';
import { MAX_LINE } from './framing';
import { log } from '../core/log';
import { checkParams, checkRequest, METHODS, type Method } from './validate';

export type Id = string | number | null;

export type Parsed =
  | { kind: 'request'; id: string | number; method: Method; params: object }
  | { kind: 'error'; id: Id; error: HostlockError }
  | { kind: 'blank' };

export function parseLine(line: Buffer): Parsed {
  let text = line.toString('utf8');
  if (text.includes('\ufffd') && !isValidUtf8(line)) {
    return { kind: 'error', id: null, error: new HostlockError(ErrorCode.ParseError, 'message is not valid UTF-8') };
  }
  text = text.trim();
  if (!text) return { kind: 'blank' }; // blank lines are keep-alives, not messages
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    const error = new HostlockError(ErrorCode.ParseError, `parse error: ${(err as Error).message}`);
    return { kind: 'error', id: null, error };
  }
  const id = pickId(msg);
  const bad = checkRequest(msg);
  if (bad) {
    const why = Array.isArray(msg)
      ? 'batches are not supported: send one request per line'
      : `${bad} (expected {"jsonrpc":"2.0","id":…,"method":…,"params":{…}})`;
    return { kind: 'error', id, error: new HostlockError(ErrorCode.InvalidRequest, why) };
  }
  const req = msg as { id: string | number; method: string; params?: object };
  if (!(METHODS as readonly string[]).includes(req.method)) {
    const error = new HostlockError(
      ErrorCode.MethodNotFound,
      `unknown method "${req.method}"; known: ${METHODS.join(', ')}`,
    );
    return { kind: 'error', id: req.id, error };
  }
  const method = req.method as Method;
  const params = req.params ?? {};
  const problem = checkParams(method, params);
  if (problem) return { kind: 'error', id: req.id, error: invalidParams(problem) };
  return { kind: 'request', id: req.id, method, params };
}

export function overlongError(): HostlockError {
  return new HostlockError(
    ErrorCode.InvalidRequest,
    `message longer than ${MAX_LINE} bytes: refused, and skipped up to the next newline`,
  );
}

export function resultLine(id: Id, result: unknown): string {
  return JSON.stringify({ jsonrpc: '2.0', id, result }) + '\n';
}

// Anything but a HostlockError is a bug: logged, and answered as -32603.
export function errorLine(id: Id, err: unknown): string {
  const e =
    err instanceof HostlockError
      ? err
      : new HostlockError(
          ErrorCode.Internal,
          `internal error: ${err instanceof Error ? err.message : JSON.stringify(err)}`,
        );
  if (!(err instanceof HostlockError))
    log.error('internal error', { error: err instanceof Error ? err.stack : JSON.stringify(err) });
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code: e.code, message: e.message, data: e.data } }) + '\n';
}

export function notificationLine(method: string, params: unknown): string {
  return JSON.stringify({ jsonrpc: '2.0', method, params }) + '\n';
}

function pickId(msg: unknown): Id {
  if (msg && typeof msg === 'object' && !Array.isArray(msg)) {
    const id = (msg as { id?: unknown }).id;
    if (typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id))) return id;
  }
  return null;
}

function isValidUtf8(buf: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}
