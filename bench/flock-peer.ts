// A plain process for the flock(2) floor of goal 3: it locks and unlocks one
// file with flock(2) (fs-ext, blocking in the main thread) as its parent
// says, and reports CLOCK_MONOTONIC times (comparable across processes).
import { openSync } from 'node:fs';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- fs-ext ships no types; this is the one call used
const { flockSync } = require('fs-ext') as { flockSync: (fd: number, flags: string) => void };
const file = process.argv[2];
if (!file) throw new Error('usage: node flock-peer.js <lock file> (with an IPC channel to its parent)');
const fd = openSync(file, 'a');
const now = () => process.hrtime.bigint().toString();

process.on('message', (m: string) => {
  if (m === 'lock') {
    flockSync(fd, 'ex');
    process.send!({ locked: now() });
  } else if (m === 'wait') {
    process.send!({ waiting: true });
    flockSync(fd, 'ex'); // blocks until the holder lets go
    const t = now();
    flockSync(fd, 'un');
    process.send!({ acquired: t });
  } else if (m === 'release') {
    const t = now();
    flockSync(fd, 'un');
    process.send!({ released: t });
  } else if (m === 'exit') {
    process.exit(0);
  }
});
