// A TCP relay in front of each etcd member that can be cut like a network
// partition: after `cut()`, bytes stop flowing both ways and new connections
// hang, with no reset or FIN, so the client learns only through its timeouts.
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface Blackhole {
  // 127.0.0.1:PORT, one per target, in the same order.
  hosts: string[];
  cut(): void;
  close(): Promise<void>;
}

export async function blackholes(targets: string[]): Promise<Blackhole> {
  let cut = false;
  const sockets = new Set<Socket>();
  const servers: Server[] = [];
  const hosts: string[] = [];
  for (const target of targets) {
    const [host, port] = target.replace(/^https?:\/\//, '').split(':');
    const server = createServer((down) => {
      sockets.add(down);
      down.on('close', () => sockets.delete(down));
      down.on('error', () => {});
      if (cut) return down.pause();
      const up = connect(Number(port), host);
      sockets.add(up);
      up.on('close', () => sockets.delete(up));
      up.on('error', () => down.destroy());
      down.on('data', (c) => {
        if (!cut) up.write(c);
      });
      up.on('data', (c) => {
        if (!cut) down.write(c);
      });
      down.on('end', () => !cut && up.end());
      up.on('end', () => !cut && down.end());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    servers.push(server);
    hosts.push(`127.0.0.1:${(server.address() as { port: number }).port}`);
  }
  return {
    hosts,
    cut: () => {
      cut = true;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    },
  };
}
