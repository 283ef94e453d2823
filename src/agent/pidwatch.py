"""Process exit watcher for the hostlock agent.

Reads "PID START" lines on stdin (START: field 22 of /proc/PID/stat) and
writes "PID" on stdout the moment that process has ended (at once if it is
already gone). A pidfd wakes it without polling; it ends on stdin EOF.
"""

import os
import select
import sys


def start_time(pid):
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(b')') + 2 :].split()
    if rest[0] in (b'Z', b'X'):
        return None
    return rest[19].decode()


def main():
    poller = select.poll()
    by_fd = {}
    watched = set()
    pending = b''
    poller.register(0, select.POLLIN)
    while True:
        for fd, _events in poller.poll():
            if fd != 0:
                pid = by_fd.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                watched.discard(pid)
                os.write(1, b'%d\n' % pid)
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b'\n')
            for line in lines:
                fields = line.split()
                if len(fields) != 2 or not fields[0].isdigit():
                    continue
                pid = int(fields[0])
                if pid in watched:
                    continue
                try:
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    os.write(1, b'%d\n' % pid)
                    continue
                # Opened first, checked second: a PID reused before the open shows another start time.
                if start_time(pid) != fields[1].decode():
                    os.close(pidfd)
                    os.write(1, b'%d\n' % pid)
                    continue
                by_fd[pidfd] = pid
                watched.add(pid)
                poller.register(pidfd, select.POLLIN)


if __name__ == '__main__':
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(0)
