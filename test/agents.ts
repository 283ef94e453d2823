// A run agent for tests: a sleeping stand-in for ansible-playbook owns it.
import { spawn, type ChildProcess } from 'node:child_process';
import { CLI, cli, connectSocket, until } from './rpc';

export interface TestAgent {
  owner: ChildProcess;
  agent: ChildProcess;
  socket: string;
  connect(): ReturnType<typeof connectSocket>;
  // Resolves once the agent has exited (it releases and writes its last records first).
  stop(): Promise<void>;
}

// `wrap`: a command prefix the agent runs under (e.g. `ip netns exec NS`).
export async function startAgent(
  env: NodeJS.ProcessEnv,
  stderr: 'ignore' | 'pipe' = 'ignore',
  wrap: string[] = [],
): Promise<TestAgent> {
  const fullEnv = { ...process.env, ...env };
  const owner = spawn('sleep', ['3600'], { stdio: 'ignore' });
  const argv = [...wrap, process.execPath, CLI, 'agent', '--owner-pid', String(owner.pid)];
  const agent = spawn(argv[0]!, argv.slice(1), {
    env: fullEnv,
    stdio: ['ignore', 'ignore', stderr],
  });
  const socket = cli(['agent', '--owner-pid', String(owner.pid), '--print-socket'], env).stdout.trim();
  await until(
    async () => {
      try {
        (await connectSocket(socket)).sock.destroy();
        return true;
      } catch {
        return false;
      }
    },
    10000,
    50,
  );
  return {
    owner,
    agent,
    socket,
    connect: () => connectSocket(socket),
    stop() {
      const exited =
        agent.exitCode !== null || agent.signalCode !== null
          ? Promise.resolve()
          : new Promise<void>((resolve) => agent.once('exit', () => resolve()));
      agent.kill('SIGTERM');
      owner.kill('SIGKILL');
      return exited;
    },
  };
}
