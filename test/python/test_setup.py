"""hostlock.core.setup against a private PostgreSQL server with no schema yet
(test/servers/up.ts --bare): check mode, create, idempotence, grants, errors,
and a lock taken afterwards as the lock-only role. No password is ever shown."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO

UP = REPO / 'build' / 'test' / 'servers' / 'up.js'


@pytest.fixture(scope='module')
def pg():
    """A fresh PostgreSQL server, its admin URL and password, and the lock role's URL."""
    assert UP.exists(), '%s is missing: run make build (it builds the test servers)' % UP
    tmp = Path(tempfile.mkdtemp(prefix='hostlock-setup-'))
    env_file = tmp / 'servers.env'
    with open(tmp / 'servers.log', 'w') as log:
        proc = subprocess.Popen(
            ['node', str(UP), str(env_file), '--bare'], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while not env_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    'the private PostgreSQL server did not start (it needs the postgresql package; as root '
                    'test/servers/postgres.ts installs it):\n' + (tmp / 'servers.log').read_text()
                )
            time.sleep(0.2)
        yield dict(line.split('=', 1) for line in env_file.read_text().splitlines() if '=' in line)
    finally:
        proc.stdin.close()  # the servers stop when their stdin closes
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PLAY = """
- hosts: h1
  gather_facts: false
  tasks:
    - name: setup
      hostlock.core.setup: {args}
"""


def _setup(env, pg, tag, args='{}', check=False, extra_env=None):
    book = env.playbook('setup-%s.yml' % tag, PLAY.format(args=args))
    rc, out = env.run(book, *(['--check'] if check else []), tag=tag, env=extra_env)
    rec = env.record(tag, 'setup')
    for secret in (pg['HOSTLOCK_TEST_PG_ADMIN_PASSWORD'], 'lock-pw-s3cret'):
        assert secret not in out, out
        assert secret not in str(rec), rec
    return rc, out, rec


def test_setup_creates_grants_and_is_idempotent(env, pg):
    admin, role = pg['HOSTLOCK_TEST_PG_ADMIN_URL'], pg['HOSTLOCK_TEST_PG_LOCK_ROLE']
    with_url = "{backend: '%s', grant: %s}" % (admin, role)

    # Check mode reads the store and changes nothing.
    rc, out, rec = _setup(env, pg, 'check', with_url, check=True)
    assert rc == 0 and rec['status'] == 'ok', out
    res = rec['result']
    assert res['changed'] is True and res['created'] is True and res['grant_changed'] is True, res
    assert res['msg'] == 'would change the store', res
    assert res['backend'].startswith('postgresql://postgres:***@127.0.0.1:'), res
    rc, out, rec = _setup(env, pg, 'check-again', with_url, check=True)
    assert rec['result']['created'] is True, rec

    # Before setup the lock role cannot lock: the schema is not there.
    lock = env.playbook(
        'lock.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock: {name: db, timeout: 5}
            - name: release
              hostlock.core.lock: {name: db, state: released}
        """,
    )
    as_locker = {'HOSTLOCK_BACKEND': pg['HOSTLOCK_TEST_PG_URL']}
    rc, out = env.run(lock, env=as_locker, tag='lock-before')
    assert rc != 0 and env.record('lock-before', 'lock')['status'] == 'failed', out

    rc, out, rec = _setup(env, pg, 'create', with_url)
    assert rc == 0 and rec['status'] == 'ok', out
    res = rec['result']
    assert res['changed'] is True and res['created'] is True and res['grant_changed'] is True, res
    assert res['schema'] == 'hostlock' and res['version'] >= 1 and res['granted'] == role, res
    assert res['upgraded_from'] is None, res

    # Again: nothing to do, and it says so.
    rc, out, rec = _setup(env, pg, 'again', with_url)
    assert rc == 0 and rec['result']['changed'] is False and rec['result']['grant_changed'] is False, rec
    rc, out, rec = _setup(env, pg, 'check-done', with_url, check=True)
    assert rec['result']['changed'] is False and rec['result']['msg'] == 'nothing to change', rec

    # The lock-only role now locks.
    rc, out = env.run(lock, env=as_locker, tag='lock-after')
    assert rc == 0, out
    assert env.record('lock-after', 'lock')['result']['changed'] is True

    # A grant taken away is given again, and reported.
    subprocess.run(
        [
            'psql',
            admin,
            '-q',
            '-c',
            'REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hostlock FROM %s; '
            'REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hostlock FROM PUBLIC' % role,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    rc, out, rec = _setup(env, pg, 'regrant', with_url)
    assert rec['result']['changed'] is True and rec['result']['grant_changed'] is True, rec
    assert rec['result']['created'] is False, rec
    rc, out = env.run(lock, env=as_locker, tag='lock-regranted')
    assert rc == 0, out


def test_setup_takes_url_and_password_from_the_environment(env, pg):
    # As an AWX credential injects them: HOSTLOCK_BACKEND without a password, PGPASSWORD.
    admin = pg['HOSTLOCK_TEST_PG_ADMIN_URL'].replace(':%s@' % pg['HOSTLOCK_TEST_PG_ADMIN_PASSWORD'], '@')
    extra = {'HOSTLOCK_BACKEND': admin, 'PGPASSWORD': pg['HOSTLOCK_TEST_PG_ADMIN_PASSWORD']}
    rc, out, rec = _setup(env, pg, 'from-env', '{}', extra_env=extra)
    assert rc == 0 and rec['status'] == 'ok', out
    assert rec['result']['backend'] == admin, rec


def test_setup_errors_are_clear_and_show_no_password(env, pg):
    admin = pg['HOSTLOCK_TEST_PG_ADMIN_URL']
    rc, out, rec = _setup(env, pg, 'no-role', "{backend: '%s', grant: no_such_role}" % admin)
    assert rc != 0 and rec['status'] == 'failed', out
    assert 'granting the lock role no_such_role failed: role "no_such_role" does not exist' in rec['result']['msg']

    wrong = admin.replace(pg['HOSTLOCK_TEST_PG_ADMIN_PASSWORD'], 'not-the-password')
    rc, out, rec = _setup(env, pg, 'bad-pw', "{backend: '%s'}" % wrong)
    assert rc != 0 and rec['status'] == 'failed', out
    assert 'password' in rec['result']['msg'].lower() and 'not-the-password' not in out, rec

    rc, out, rec = _setup(env, pg, 'etcd', "{backend: 'etcd://127.0.0.1:2379'}")
    assert rc != 0 and 'prepares a PostgreSQL store' in rec['result']['msg'], rec

    env.vars.pop('HOSTLOCK_BACKEND', None)
    rc, out, rec = _setup(env, pg, 'no-backend', '{}')
    assert rc != 0 and 'give backend' in rec['result']['msg'], rec
