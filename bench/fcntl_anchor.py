"""Pure-Python fcntl anchors for the hostlock benchmarks (standard library only).

  many DIR N               take N exclusive locks DIR/host-<i>.lock in one process (goal 4)
  loop PATH CLIENTS CYCLES CLIENTS processes, each CYCLES x (open, flock LOCK_EX,
                           flock LOCK_UN, close) on one file (goal 6)

Prints one JSON line of figures on stdout.
"""

import fcntl
import json
import os
import sys
import time


def many(directory, n):
    start = time.perf_counter()
    held = []
    for i in range(n):
        fd = os.open(os.path.join(directory, 'host-%d.lock' % i), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    ms = (time.perf_counter() - start) * 1000
    for fd in held:
        os.close(fd)
    return {'ms': ms}


def loop(path, clients, cycles):
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(clients):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.read(go_r, 1)  # start together
            for _ in range(cycles):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            os._exit(0)
        pids.append(pid)
    os.close(go_r)
    time.sleep(0.05)  # let every child reach its read
    start = time.perf_counter()
    os.write(go_w, b'x' * clients)
    for pid in pids:
        os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    return {'seconds': seconds, 'cycles_per_s': clients * cycles / seconds}


def main(argv):
    if argv[1] == 'many':
        out = many(argv[2], int(argv[3]))
    elif argv[1] == 'loop':
        out = loop(argv[2], int(argv[3]), int(argv[4]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == '__main__':
    main(sys.argv)
