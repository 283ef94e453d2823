"""Helper discovery and the agent socket rule the shim shares with the helper."""

from __future__ import annotations

import os
import stat
import sys
from types import SimpleNamespace

import pytest
from conftest import CLI


def _helper_module(env):
    root = env.vars['ANSIBLE_COLLECTIONS_PATH']
    if root not in sys.path:
        sys.path.insert(0, root)
    from ansible_collections.hostlock.core.plugins.plugin_utils import agent, discovery

    return SimpleNamespace(
        find_helper=discovery.find_helper, HelperError=discovery.HelperError, _guess_socket=agent._guess_socket
    )


def test_socket_rule_matches_the_helper(env, monkeypatch):
    # The shim guesses the agent socket to skip a Node start per task; the guess must be the helper's path.
    helper = _helper_module(env)
    monkeypatch.setenv('HOSTLOCK_RUNTIME_DIR', str(env.runtime_dir))
    res = env.cli('agent', '--owner-pid', str(os.getpid()), '--print-socket')
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == helper._guess_socket(os.getpid())


def test_discovery_order(env, tmp_path):
    helper = _helper_module(env)
    on_path = tmp_path / 'bin'
    on_path.mkdir()
    fake = on_path / 'hostlock'
    fake.write_text('#!/bin/sh\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    node_cmd = 'node %s' % CLI
    # PATHs of this test's own directories only: a `hostlock` the user installed is never seen.
    nothing = tmp_path / 'empty'
    nothing.mkdir()
    environ = {'PATH': '%s:%s' % (on_path, nothing), 'HOSTLOCK_HELPER': node_cmd}
    assert helper.find_helper(arg=['node', str(CLI)], var='x y', environ=environ) == ['node', str(CLI)]
    assert helper.find_helper(var=node_cmd, environ=dict(environ, HOSTLOCK_HELPER='')) == ['node', str(CLI)]
    assert helper.find_helper(environ=environ) == ['node', str(CLI)]
    assert helper.find_helper(environ=dict(environ, HOSTLOCK_HELPER='  ')) == [str(fake)]
    with pytest.raises(helper.HelperError) as info:
        helper.find_helper(environ={'PATH': str(nothing)})
    assert 'npm install -g ./hostlock-<version>.tgz' in str(info.value)


def _fake_node(directory, version):
    node = directory / 'node'
    node.write_text('#!/bin/sh\necho %s\n' % version)
    node.chmod(0o755)
    return node


def test_the_bundled_helper_comes_last_and_runs_on_node_from_path(env, tmp_path):
    helper = _helper_module(env)
    bundled = tmp_path / 'collection' / 'helper' / 'cli.js'
    bundled.parent.mkdir(parents=True)
    bundled.write_text('')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    node = _fake_node(bin_dir, 'v22.23.5')
    environ = {'PATH': str(bin_dir)}
    assert helper.find_helper(environ=environ, bundled=str(bundled)) == [str(node), str(bundled)]
    # Anything the user named, and `hostlock` on PATH, come first.
    named = 'node %s' % CLI
    assert helper.find_helper(environ=dict(environ, HOSTLOCK_HELPER=named), bundled=str(bundled)) == ['node', str(CLI)]
    on_path = bin_dir / 'hostlock'
    on_path.write_text('#!/bin/sh\n')
    on_path.chmod(0o755)
    assert helper.find_helper(environ=environ, bundled=str(bundled)) == [str(on_path)]


@pytest.mark.parametrize(
    'version, what',
    [
        (None, 'no `node` is on PATH'),
        ('v18.19.0', 'is v18.19.0'),
        ('v8.10.0', 'is v8.10.0'),
        ('not-a-version', 'is not-a-version'),
    ],
)
def test_an_unsuitable_node_is_one_clear_error(env, tmp_path, version, what):
    helper = _helper_module(env)
    bundled = tmp_path / 'cli.js'
    bundled.write_text('')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    if version is not None:
        _fake_node(bin_dir, version)
    with pytest.raises(helper.HelperError) as info:
        helper.find_helper(environ={'PATH': str(bin_dir)}, bundled=str(bundled))
    msg = str(info.value)
    assert 'needs Node.js >= 20' in msg and what in msg, msg
    assert 'dnf module enable -y nodejs:20' in msg and 'apt-get install nodejs' in msg, msg


def test_a_helper_named_once_the_runs_agent_is_up(env, tmp_path):
    """The run's agent serves every later task: a `helper` named there that does not exist
    fails the task; one that exists but is not the agent's is said to be unused at -v."""
    other = tmp_path / 'other-hostlock'
    other.write_text('#!/bin/sh\nexec %s "$@"\n' % env.helper)
    other.chmod(0o755)
    pb = env.playbook(
        'helpers-later.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: first
              hostlock.core.lock:
                name: a
            - name: missing helper
              hostlock.core.lock:
                name: b
                helper: /nowhere/hostlock
              ignore_errors: true
            - name: missing helper variable
              hostlock.core.lock:
                name: b
              vars:
                hostlock_helper: /nowhere/either
              ignore_errors: true
            - name: other helper
              hostlock.core.lock:
                name: c
                helper: %s
            - name: same helper
              hostlock.core.lock:
                name: d
                helper: "{{ lookup('env', 'HOSTLOCK_HELPER') }}"
    """
        % other,
    )
    code, out = env.run(pb, '-v')
    assert code == 0, out
    missing = env.record('run', 'missing helper')
    assert missing['status'] == 'failed'
    assert missing['result']['msg'].startswith(
        'hostlock helper from helper argument: /nowhere/hostlock is not an executable file.'
    ), missing['result']['msg']
    var = env.record('run', 'missing helper variable')
    assert var['status'] == 'failed'
    assert 'hostlock helper from hostlock_helper variable: /nowhere/either' in var['result']['msg']
    for task in ('other helper', 'same helper'):
        assert env.record('run', task)['status'] == 'ok', task
    said = [line for line in out.splitlines() if 'not used' in line]
    assert said == [
        "hostlock: h1: helper %s (helper argument) not used: this run's agent is already up, started "
        'with %s by an earlier task, and serves the whole run; a helper takes effect when a run starts '
        'its agent' % (other, env.helper)
    ], out
    # Not at the default verbosity.
    code, out = env.run(pb, tag='quiet')
    assert code == 0, out
    assert 'not used' not in out, out
