// Simulated controllers on their own network: a network namespace joined to
// this one by a veth pair, so a test can run a controller's processes inside
// it and cut its link while they hold locks. Needs root (CI runs as root);
// `requireNetns` fails with instructions otherwise, never skips.
import { execFileSync } from 'node:child_process';

export interface Netns {
  name: string;
  hostAddr: string; // this side of the link: servers listen here for the namespace
  nsAddr: string; // the namespace's side
  // argv prefix that runs a command inside the namespace
  exec: [string, ...string[]];
  cut(): void;
  restore(): void;
  remove(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function requireNetns(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      'this test simulates controllers in network namespaces and needs root (CI runs as root): run it with sudo',
    );
  }
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    throw new Error('`ip` (iproute2) is missing: apt-get install -y iproute2');
  }
}

let seq = 0;

// Subnet 10.<a>.<b>.0/30 unique per process and namespace.
export function createNetns(label: string): Netns {
  requireNetns();
  const n = (process.pid % 200) * 50 + ++seq;
  const a = 200 + (Math.floor(n / 250) % 50);
  const b = n % 250;
  const name = `hl${label}${process.pid}x${seq}`.slice(0, 15);
  const outer = `ho${process.pid % 100000}x${seq}`.slice(0, 15);
  const inner = `hi${process.pid % 100000}x${seq}`.slice(0, 15);
  const hostAddr = `10.${a}.${b}.1`;
  const nsAddr = `10.${a}.${b}.2`;
  ip('netns', 'add', name);
  try {
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', inner, 'netns', name);
    ip('addr', 'add', `${hostAddr}/30`, 'dev', outer);
    ip('link', 'set', outer, 'up');
    ip('netns', 'exec', name, 'ip', 'addr', 'add', `${nsAddr}/30`, 'dev', inner);
    ip('netns', 'exec', name, 'ip', 'link', 'set', inner, 'up');
    ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  } catch (err) {
    try {
      ip('netns', 'del', name);
    } catch {
      /* half made */
    }
    throw err;
  }
  return {
    name,
    hostAddr,
    nsAddr,
    exec: ['ip', 'netns', 'exec', name],
    // The link goes down on this side: nothing passes either way and no reset
    // reaches either end, as with a cut cable; each end notices only by its
    // own timers (keepalives, leases).
    cut: () => ip('link', 'set', outer, 'down'),
    restore: () => {
      ip('link', 'set', outer, 'up');
      ip('addr', 'replace', `${hostAddr}/30`, 'dev', outer);
    },
    remove: () => {
      try {
        ip('link', 'del', outer);
      } catch {
        /* gone with the namespace */
      }
      try {
        ip('netns', 'del', name);
      } catch {
        /* already gone */
      }
    },
  };
}
