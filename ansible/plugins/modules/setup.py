#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
# Documentation only: the work is done by the action plugin of the same name on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: setup
short_description: Prepare a PostgreSQL lock store ahead of the runs that lock in it
version_added: "0.1.0"
description:
  - Creates or upgrades the C(hostlock) schema of a PostgreSQL store, as C(hostlock setup --backend URL) does,
    and with O(grant) gives a lock-only role what locking needs (C(USAGE) on the schema, C(EXECUTE) on its
    functions, nothing else).
  - Idempotent. C(changed) is true only when the schema was created or upgraded or the grants were missing.
  - Runs the hostlock helper on the controller, found as for M(hostlock.core.lock). The URL reaches the helper
    in its environment, never on a command line; a password in it, or in E(PGPASSWORD), is never shown.
  - The local store and etcd need no setup.
author:
  - hostlock maintainers (@hostlock)
options:
  backend:
    description:
      - The C(postgresql://) URL (libpq syntax) of a role allowed to create the schema (C(CREATE) on the database).
        C(PG*) variables such as E(PGPASSWORD), and C(~/.pgpass), are honoured.
      - Defaults to the variable C(hostlock_backend), then the environment variable E(HOSTLOCK_BACKEND).
    type: str
  grant:
    description:
      - A role to give what locking needs; the runs then lock as that role, which needs no other privilege.
    type: str
  helper:
    description:
      - Command line of the hostlock helper, for example C(node /opt/hostlock/dist/cli.js).
      - Defaults to the variable C(hostlock_helper), then E(HOSTLOCK_HELPER), then C(hostlock) on E(PATH), then the
        helper the collection carries.
    type: raw
  timeout:
    description:
      - Seconds to wait for the helper to connect and finish.
    type: float
    default: 120
attributes:
  action:
    description: Runs on the controller as an action plugin; the module file only documents it.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  bypass_host_loop:
    description: Runs once per host; use C(run_once).
    support: none
  check_mode:
    description: Reads the store and reports what would change, changing nothing.
    support: full
  diff_mode:
    description: Has no diff.
    support: none
  platform:
    description: Linux controllers; the managed hosts are not touched.
    platforms: posix
    support: full
seealso:
  - module: hostlock.core.lock
"""

EXAMPLES = r"""
- name: Prepare the lock store once, as its owner; the runs lock as hl_lock
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Create the schema and grant the lock role what locking needs
      hostlock.core.setup:
        backend: postgresql://hostlock_admin@db.example/hostlock?sslmode=verify-full
        grant: hl_lock

- name: The same with the URL and password from the environment
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Prepare the store named by HOSTLOCK_BACKEND (an AWX credential injects it and PGPASSWORD)
      hostlock.core.setup:
        grant: hl_lock
"""

RETURN = r"""
backend:
  description: The store's URL, its password masked.
  returned: always
  type: str
  sample: postgresql://hostlock_admin:***@db.example/hostlock?sslmode=verify-full
schema:
  description: The schema the locks live in.
  returned: always
  type: str
  sample: hostlock
version:
  description: The schema's version after setup.
  returned: always
  type: int
  sample: 2
created:
  description: Whether the schema was created (in check mode, would be).
  returned: always
  type: bool
upgraded_from:
  description: The version the schema was upgraded from (in check mode, would be), or null.
  returned: always
  type: int
granted:
  description: The role given what locking needs, or null without O(grant).
  returned: always
  type: str
  sample: hl_lock
grant_changed:
  description: Whether O(grant) had to grant anything (in check mode, would have to).
  returned: always
  type: bool
msg:
  description: What would change.
  returned: in check mode
  type: str
"""
