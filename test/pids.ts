// Makes the kernel hand out a chosen PID again (root: /proc/sys/kernel/ns_last_pid),
// to test what happens when a dead process's PID is reused.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';

// Starts `sleep` with PID `pid` if it can (a few tries); undefined otherwise.
export function spawnWithPid(pid: number): ChildProcess | undefined {
  for (let i = 0; i < 5; i++) {
    try {
      writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    } catch {
      return undefined;
    }
    const p = spawn('sleep', ['600'], { stdio: 'ignore' });
    if (p.pid === pid) return p;
    p.kill('SIGKILL');
  }
  return undefined;
}
