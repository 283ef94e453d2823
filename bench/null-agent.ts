// The floor of any Node per-run agent, for the playbook benchmark (2b-null-node):
// started by the shim exactly as `hostlock agent` is (`… agent --owner-pid PID
// --runtime-dir DIR`), it listens on the socket the shim computes and answers
// every request at once as if the lock were free, holding nothing. Only Node
// built-ins, no bundle: Node's start and event loop, and nothing of hostlock's.
// `--protocol N` (before `agent`) is what it says in `hello`.
import { readFileSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const value = i < 0 ? undefined : process.argv[i + 1];
  if (value === undefined) throw new Error(`null agent: missing ${name}`);
  return value;
}

const ownerPid = Number(arg('--owner-pid'));
const protocol = Number(arg('--protocol'));
const stat = readFileSync(`/proc/${ownerPid}/stat`, 'utf8');
const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
const socket = join(arg('--runtime-dir'), `agent-${ownerPid}-${start}.sock`);

function answer(method: string, params: Record<string, unknown>): unknown {
  if (method === 'hello') return { protocol };
  if (method === 'release') return { released: true };
  return { acquired: true, name: params.name, path: '', mode: 'exclusive', waited: 0, holders: [], changed: true };
}

try {
  unlinkSync(socket);
} catch {
  /* none yet */
}
createServer((sock) => {
  let buf = '';
  sock.on('error', () => sock.destroy());
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const msg = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      sock.write(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: answer(msg.method, msg.params ?? {}) }) + '\n');
    }
  });
}).listen(socket);

// Ends with its run, like the real agent (which watches more than the owner).
setInterval(() => {
  try {
    process.kill(ownerPid, 0);
  } catch {
    process.exit(0);
  }
}, 200);
