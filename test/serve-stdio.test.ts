// `hostlock serve` reads stdin and writes stdout by their descriptors: what a
// client may hand it still works — a non-blocking pipe, a burst of requests
// far larger than a pipe holds, replies larger than a pipe holds, a client
// that stops reading and goes away.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { CLI, lockedByOthers, tempDir } from './rpc';

// A serve helper on pipes, its stderr ours.
const serve = (dir: string) =>
  spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, HOSTLOCK_DIR: dir },
    stdio: ['pipe', 'pipe', 'inherit'],
  });

const request = (id: number, name: string) =>
  JSON.stringify({ jsonrpc: '2.0', id, method: 'try', params: { name } }) + '\n';

// A Python client that sets O_NONBLOCK on both of the helper's pipe ends
// before it starts it, as a client sharing its descriptors might.
const NONBLOCKING = `
import json, os, select, subprocess, sys
r_in, w_in = os.pipe(); r_out, w_out = os.pipe()
os.set_blocking(r_in, False); os.set_blocking(w_out, False)
p = subprocess.Popen([sys.argv[1], sys.argv[2], "serve"], stdin=r_in, stdout=w_out)
os.close(r_in); os.close(w_out)
os.write(w_in, b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "try", "params": {"name": "n%d" % i}}).encode() + b"\\n" for i in range(1, 4)))
buf = b""
while buf.count(b"\\n") < 3:
    select.select([r_out], [], [], 10)
    buf += os.read(r_out, 65536)
os.close(w_in)
print(json.dumps([json.loads(l)["id"] for l in buf.decode().splitlines()]))
sys.exit(p.wait(timeout=10))
`;

test('serve on non-blocking pipes: every request answered in order, EOF ends it with 0', () => {
  const t = tempDir('hl-stdio');
  try {
    const r = spawnSync('python3', ['-c', NONBLOCKING, process.execPath, CLI], {
      env: { ...process.env, HOSTLOCK_DIR: t.dir },
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '[1, 2, 3]\n');
  } finally {
    t.cleanup();
  }
});

test('serve: 3000 requests in one burst and replies larger than a pipe holds, whole and in order', async () => {
  const t = tempDir('hl-stdio');
  try {
    const p = serve(t.dir);
    const n = 3000;
    // 3000 requests (about 230 KB) before reading a byte: the helper blocks on
    // its full stdout until we read, and nothing is lost either way.
    p.stdin.write(Array.from({ length: n }, (_, i) => request(i + 1, `burst-${i % 50}`)).join(''));
    let out = '';
    p.stdout.setEncoding('utf8');
    await new Promise<void>((done) => {
      p.stdout.on('data', (c: string) => {
        out += c;
        if (out.split('\n').length > n) done();
      });
    });
    p.stdin.end();
    const code = await new Promise((done) => p.on('exit', done));
    const ids = out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { id: number }).id);
    assert.deepEqual(
      ids,
      Array.from({ length: n }, (_, i) => i + 1),
    );
    assert.ok(out.length > 256 * 1024, `${out.length} bytes of replies`);
    assert.equal(code, 0);
  } finally {
    t.cleanup();
  }
});

test('serve whose client closes stdout and stops: the helper ends, its locks released', async () => {
  const t = tempDir('hl-stdio');
  try {
    const p = serve(t.dir);
    p.stdin.write(request(1, 'held'));
    await new Promise((done) => p.stdout.once('data', done));
    p.stdout.destroy(); // the next reply meets EPIPE
    p.stdin.write(request(2, 'other'));
    const code = await new Promise((done) => p.on('exit', done));
    assert.equal(code, 0);
    assert.ok(!lockedByOthers(`${t.dir}/held.lock`), 'the lock was released');
  } finally {
    t.cleanup();
  }
});

test('serve: SIGTERM, SIGINT or SIGHUP with stdin still open release its locks and exit 0', async () => {
  const t = tempDir('hl-stdio');
  try {
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      const p = serve(t.dir);
      p.stdin.write(request(1, 'held'));
      await new Promise((done) => p.stdout.once('data', done));
      assert.ok(lockedByOthers(`${t.dir}/held.lock`), 'held while serve runs');
      const exited = new Promise<[number | null, string | null]>((done) => p.on('exit', (c, s) => done([c, s])));
      p.kill(sig);
      assert.deepEqual(await exited, [0, null], sig);
      assert.ok(!lockedByOthers(`${t.dir}/held.lock`), `released after ${sig}`);
      p.stdin.destroy();
    }
  } finally {
    t.cleanup();
  }
});
