// The ceiling for goal 6: a Node process that answers each line on a Unix
// socket with the same line, doing nothing else. Prints "ready" when listening.
import { createServer } from 'node:net';

createServer((s) => {
  s.on('data', (d) => s.write(d));
  s.on('error', () => s.destroy());
}).listen(process.argv[2], () => process.stdout.write('ready\n'));
