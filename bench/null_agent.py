# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""The floor of any per-run agent process, for the playbook benchmark (2b-null-python).

Started by the shim exactly as ``hostlock agent`` is (``... agent --owner-pid PID
--runtime-dir DIR``), it listens on the socket the shim computes and answers every
request at once as if the lock were free, holding nothing: a Python process that
starts in a fraction of Node's time and does no work. ``--protocol N`` (before
``agent``) is what it says in ``hello``."""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import threading
import time


def arg(name):
    return sys.argv[sys.argv.index(name) + 1]


def answer(method, params):
    if method == 'hello':
        return {'protocol': int(arg('--protocol'))}
    if method == 'release':
        return {'released': True}
    return {
        'acquired': True,
        'name': params.get('name'),
        'path': '',
        'mode': 'exclusive',
        'waited': 0,
        'holders': [],
        'changed': True,
    }


def watch_owner(pid):
    """End with the run, like the real agent."""
    while True:
        time.sleep(0.2)
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(0)


def main():
    owner = int(arg('--owner-pid'))
    with open('/proc/%d/stat' % owner) as f:
        stat = f.read()
    start = stat[stat.rindex(')') + 2 :].split()[19]
    path = os.path.join(arg('--runtime-dir'), 'agent-%d-%s.sock' % (owner, start))
    try:
        os.unlink(path)
    except OSError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.setblocking(False)
    threading.Thread(target=watch_owner, args=(owner,), daemon=True).start()
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    buffers = {}
    while True:
        for key, _events in sel.select():
            if key.fileobj is server:
                conn, _addr = server.accept()
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b''
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except OSError:
                data = b''
            if not data:
                sel.unregister(conn)
                conn.close()
                del buffers[conn]
                continue
            buffers[conn] += data
            while b'\n' in buffers[conn]:
                line, _sep, buffers[conn] = buffers[conn].partition(b'\n')
                msg = json.loads(line)
                result = answer(msg.get('method'), msg.get('params') or {})
                conn.sendall(json.dumps({'jsonrpc': '2.0', 'id': msg.get('id'), 'result': result}).encode() + b'\n')


if __name__ == '__main__':
    main()
