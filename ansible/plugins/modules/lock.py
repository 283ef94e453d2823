#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
# Documentation only: the work is done by the action plugin of the same name on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lock
short_description: Keep concurrent playbook runs out of each other's way with flock(2) locks
version_added: "0.1.0"
description:
  - Takes, tries, releases or inspects a named C(flock(2)) lock on the Ansible controller, so that
    tasks of concurrent C(ansible-playbook) runs (cron, CI, people on a shared bastion) that must
    not overlap take turns, per host or per any named resource.
  - A lock taken with O(state=acquired) or O(state=try) belongs to the B(run), not to the task;
    it lasts until O(state=released) or until the playbook run ends in any way (success, failure,
    Ctrl-C, SIGKILL of C(ansible-playbook)); the kernel drops it then, so no stale lock is left.
  - Hosts of one run share a hold on a common name. The hold is counted and dropped when the last
    host of the run releases it, so a run never deadlocks on itself. Acquiring what the run already
    holds reports RV(changed=false). To serialise the forks of one run, set the task keyword C(throttle) to 1.
  - While it waits it prints a line every few seconds naming the holder (playbook, task, host,
    user, pid) and since when.
  - Under the C(linear) strategy (the default) one task's hosts are locked as a batch; the run takes
    the lock names of all hosts of the batch (per-host templated names included, hosts the task skips
    with C(when) left out) in one global order, the lock file path, on behalf of all of them, also
    for hosts whose worker has not started because C(forks) is smaller than the batch. Every run takes
    any two names in the same order, so two runs can never each hold part of what the other waits
    for, and the per-host lock of the quick start cannot deadlock. A host may wait behind a name
    earlier in that order that another run holds (the waiting line says which). Names taken for hosts
    that never ask are released when the batch ends. C(free), C(host_pinned) and loops lock per host
    as the host asks, as before; C(serial) and C(throttle) keep their batches and parallelism.
  - With C(run_once), the lock belongs to the run rather than to the host the task lands on; a
    C(run_once) V(released) releases the run's whole hold (every host's share and a C(run_once)
    acquire), whichever host it runs on. A per-host V(released) does not release a C(run_once) acquire.
  - Requires Node.js >= 20 as C(node) on E(PATH) and util-linux on the controller; the collection carries
    its helper (C(helper/) in the collection). A helper given through O(helper), the variable
    C(hostlock_helper), the environment variable E(HOSTLOCK_HELPER), or C(hostlock) on E(PATH) (the
    npm-packed helper, C(npm install -g ./hostlock-<version>.tgz)) is used instead, in that order.
  - The locks are plain C(flock(2)) locks on files in O(lock_dir); C(flock(1)) and Python's
    C(fcntl.flock) on the same files exclude hostlock and the reverse.
author:
  - hostlock maintainers (@hostlock)
options:
  name:
    description:
      - Name of the lock. Any string names a resource, for example C(cluster) or C(known_hosts).
      - Defaults to the host's C(inventory_hostname), which makes a per-host lock.
    type: str
  state:
    description:
      - V(acquired) waits until the lock is held, or fails after O(timeout) naming the holder.
      - V(try) never waits and never fails on contention; RV(acquired) tells the outcome and
        RV(holders) who is in the way. On success it is held like V(acquired).
      - V(released) drops this host's share of the run's hold; RV(changed) is true when something
        was released.
      - V(status) reports the holders and takes nothing.
    type: str
    choices: [acquired, try, released, status]
    default: acquired
  timeout:
    description:
      - Seconds to wait with O(state=acquired). Omit it to wait for ever; V(0) fails at once when busy.
      - At most V(31536000) (365 days); a larger value fails before anything is taken.
      - The task keyword C(timeout) bounds the wait too; the wait then ends a moment before the
        task would be interrupted, and is recorded in the history as a timeout.
    type: float
  shared:
    description:
      - Take a shared (read) lock; shared holders overlap, an exclusive holder excludes everybody.
    type: bool
    default: false
  lock_dir:
    description:
      - Directory of the lock files.
      - Defaults to the variable C(hostlock_lock_dir), then the environment variable E(HOSTLOCK_DIR),
        then a private per-user directory C(/tmp/hostlock-<uid>/locks) chosen by the helper.
      - Runs that must exclude each other need the same directory; for several users, use a
        directory writable by a common group.
      - A symlink to a directory is followed; the helper uses its real path (the result's RV(path)),
        so runs naming the link and runs naming the directory itself share their locks.
        A symlink at a lock file is refused.
    type: path
  slots:
    description:
      - Make the lock a counting semaphore with this many slots (1 to 64) - at most that many runs hold
        it at once ("at most three runs restart app servers of this cluster").
      - Every user of the lock must give the same number; a different count fails naming both.
        Not with O(shared).
    type: int
  backend:
    description:
      - Where the locks live. Unset or C(local) (the default) means lock files in O(lock_dir) on this
        controller. A server store lets runs on several controllers (CI runners, AWX/AAP execution nodes,
        bastions) take turns on the same names.
      - C(postgresql://user@db.example/hostlock?sslmode=verify-full) uses PostgreSQL (libpq URL syntax;
        C(PG*) variables and C(~/.pgpass) are honoured; C(hostlock_keepalive=S) bounds how long a cut-off
        controller keeps its holds, 30 by default). Run C(hostlock setup --backend URL) once as a role that may
        create the schema.
      - C(etcd://host1:2379,host2:2379,host3:2379?ttl=10&prefix=hostlock/) uses etcd (C(etcd+https://) with
        C(cacert), C(cert) and C(key) options); C(ttl) bounds how long a dead or cut-off controller keeps its holds.
      - Defaults to the variable C(hostlock_backend), then the environment variable E(HOSTLOCK_BACKEND).
        Not with O(lock_dir). A password in the URL is never shown.
    type: str
  helper:
    description:
      - Command line of the hostlock helper, for example C(node /opt/hostlock/dist/cli.js).
      - Defaults to the variable C(hostlock_helper), then E(HOSTLOCK_HELPER), then C(hostlock) on E(PATH),
        then the helper this collection carries, run by C(node) from E(PATH).
      - The helper starts the run's agent, on the run's first hostlock task; the agent then serves
        every task of the run. A helper named on a later task must still exist (else the task
        fails), but is not used; at C(-v) the task says so when it is not the agent's.
    type: raw
attributes:
  action:
    description: Runs on the controller as an action plugin; the module file only documents it.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  bypass_host_loop:
    description: Runs once per host; use C(run_once) for a global lock.
    support: none
  check_mode:
    description: Reports what would happen (from the lock's status) and takes nothing.
    support: full
  diff_mode:
    description: Has no diff.
    support: none
  platform:
    description: Linux controllers (C(flock(2)) and C(/proc)); the managed hosts are not touched.
    platforms: posix
    support: full
notes:
  - The lock lives on the controller. Runs started from different controllers do not see each other
    unless O(lock_dir) is on a filesystem with working C(flock), and NFS only emulates it.
  - If the helper holding the run's locks dies while the run goes on, the next hostlock task of
    that host fails with C(lock lost) instead of continuing unprotected.
  - Ordering covers the names of one task. Locks a playbook takes across several tasks in opposite
    orders in two runs (run A locks C(db) then C(web), run B C(web) then C(db)), or per host under
    C(free), can still deadlock; hostlock then waits until O(timeout) and fails naming the holder.
    Take such names in one task, in the same order in every playbook, or set a O(timeout).
seealso:
  - name: flock(1)
    description: The shell tool for the same kind of lock.
    link: https://man7.org/linux/man-pages/man1/flock.1.html
"""

EXAMPLES = r"""
- name: One run at a time per host
  hosts: web
  tasks:
    - name: Wait up to 10 minutes for other runs to leave this host
      hostlock.core.lock:
        timeout: 600

    - name: Deploy
      ansible.builtin.command: /usr/local/bin/deploy
      changed_when: true

    - name: Let the next run in (the end of the run would do it too)
      hostlock.core.lock:
        state: released

- name: One run at a time for the whole cluster
  hosts: db
  tasks:
    - name: Take the cluster lock once for all hosts of this run  # noqa: run-once[task]
      hostlock.core.lock:
        name: cluster
      run_once: true

    - name: Rolling restart
      ansible.builtin.service:
        name: postgresql
        state: restarted
      throttle: 1

- name: Skip work somebody else is doing
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Try the cache lock without waiting
      hostlock.core.lock:
        name: artifact-cache
        state: try
      register: cache_lock

    - name: Refresh the cache only if we got it
      ansible.builtin.command: /usr/local/bin/refresh-cache
      changed_when: true
      when: cache_lock.acquired

- name: Readers share, writers exclude
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the inventory export under a shared lock
      hostlock.core.lock:
        name: inventory-export
        shared: true
        lock_dir: /srv/locks

- name: Who holds it
  hosts: web
  gather_facts: false
  tasks:
    - name: Look without taking
      hostlock.core.lock:
        state: status
      register: who

    - name: Show the holders
      ansible.builtin.debug:
        var: who.holders
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock after the task (in check mode, whether it would).
  returned: always
  type: bool
  sample: true
changed:
  description:
    - V(acquired)/V(try), true when a new hold was taken (false when the run already held it).
    - V(released), true when this host's share was released.
  returned: always
  type: bool
name:
  description: Name of the lock.
  returned: always
  type: str
  sample: web1
path:
  description: Lock file on the controller; with O(backend), the store (password masked) and the name.
  returned: always
  type: str
  sample: /tmp/hostlock-1000/locks/web1.lock
slot:
  description: With O(slots), which slot (1 to O(slots)) the run holds.
  returned: when the task took a lock with slots
  type: int
  sample: 2
cycle:
  description: When the wait would have closed a cycle of runs waiting for each other, the cycle (runs, locks, tasks).
  returned: when the task failed with a deadlock
  type: list
  elements: dict
token:
  description:
    - Fencing token of the grant, an integer that strictly increases per lock name across every holder
      (every controller, with a server store), restarts included.
    - Pass it to a system that can refuse a stale holder (e.g. store it beside what the task writes and
      reject writes carrying a lower token).
  returned: when the task took the lock
  type: int
  sample: 42
mode:
  description: V(exclusive) or V(shared).
  returned: always
  type: str
  sample: exclusive
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 12.5
holders:
  description: Who holds the lock (for a failed V(try) or a timeout, who is in the way).
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: PID of the holding ansible-playbook (or other program).
      type: int
    user:
      description: User name of the holder.
      type: str
    controller:
      description: Host name of the controller the holder runs on.
      type: str
    run:
      description: Identity of the holding run, C(<pid>-<start time>).
      type: str
    playbook:
      description: Playbook file name of the holding run.
      type: str
    play:
      description: Play that took the lock.
      type: str
    task:
      description: Task that took the lock.
      type: str
    host:
      description: Inventory host whose task took the lock.
      type: str
    mode:
      description: V(exclusive) or V(shared).
      type: str
    since:
      description: When the hold was taken, ISO 8601 UTC.
      type: str
  sample:
    - pid: 4242
      user: alice
      controller: bastion1
      run: 4242-1733
      playbook: site.yml
      play: web
      task: deploy
      host: web1
      mode: exclusive
      since: "2026-11-26T04:40:00.000Z"
msg:
  description: What happened, on failure or contention, and in check mode.
  returned: on failure, contention and in check mode
  type: str
"""
