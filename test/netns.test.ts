// The simulated-controller network itself: a namespace reaches a server on
// this side until its link is cut, and again once restored.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { after, before, test } from 'node:test';
import { createNetns, type Netns } from './netns';

let ns: Netns;
let server: Server;
let port = 0;

before(async () => {
  ns = createNetns('t');
  server = createServer((s) => s.end('hi\n'));
  await new Promise<void>((r) => server.listen(0, ns.hostAddr, r));
  port = (server.address() as { port: number }).port;
});
after(() => {
  server?.close();
  ns?.remove();
});

// The server lives in this process: the probe must not block its event loop.
function reach(): Promise<boolean> {
  const js = `const s=require('net').connect(${port},'${ns.hostAddr}');s.on('data',()=>process.exit(0));s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(2),1500)`;
  return new Promise((resolve) => {
    execFile(ns.exec[0], [...ns.exec.slice(1), process.execPath, '-e', js], { timeout: 5000 }, (err) => resolve(!err));
  });
}

test('a namespace reaches this side until cut, and again once restored', { timeout: 30_000 }, async () => {
  assert.equal(await reach(), true, 'linked');
  ns.cut();
  assert.equal(await reach(), false, 'cut');
  ns.restore();
  assert.equal(await reach(), true, 'restored');
});
