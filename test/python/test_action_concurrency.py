"""Concurrent ansible-playbook runs take turns (exclusive) or overlap (shared) in a guarded section."""

from __future__ import annotations

from conftest import journal_sections, overlaps

# Both runs reach the lock together (a barrier on ready files), then log enter/exit
# stamps around a section that must not overlap when exclusive.
GUARDED = """
- hosts: "{{ target | default('h1') }}"
  gather_facts: false
  tasks:
    - name: barrier
      ansible.builtin.shell: |
        touch {{ out }}/ready-{{ who }}-{{ inventory_hostname }}
        for i in $(seq 600); do
          [ -e {{ out }}/ready-{{ other }}-{{ inventory_hostname }} ] && exit 0
          sleep 0.05
        done
        exit 1
      changed_when: false
    - name: lock
      hostlock.core.lock:
        shared: "{{ shared | default(false) }}"
        timeout: 60
    - name: guarded
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-{{ inventory_hostname }}",
               --run, "{{ who }}-{{ inventory_hostname }}", --host, "{{ inventory_hostname }}",
               --hold, "{{ hold | default(2) }}"]
    - name: unlock
      hostlock.core.lock:
        state: released
"""


def _two_runs(env, target='h1', shared=False, hold=2):
    pb = env.playbook('guarded.yml', GUARDED)
    common = ['-e', 'target=%s' % target, '-e', 'shared=%s' % shared, '-e', 'hold=%s' % hold]
    a = env.start(pb, '-e', 'who=A', '-e', 'other=B', *common, tag='A')
    b = env.start(pb, '-e', 'who=B', '-e', 'other=A', *common, tag='B')
    out_a, _ = a.communicate(timeout=120)
    out_b, _ = b.communicate(timeout=120)
    assert a.returncode == 0, out_a
    assert b.returncode == 0, out_b
    return out_a, out_b


def test_two_runs_take_turns_on_one_host(env):
    out_a, out_b = _two_runs(env)
    spans = journal_sections(env.out / 'journal-h1')
    assert set(spans) == {'A-h1', 'B-h1'}
    assert not overlaps(spans), spans
    waits = sorted(env.record(tag, 'lock')['result']['waited'] for tag in 'AB')
    # One went straight in, the other waited for the whole section.
    assert waits[0] < 1.0 and waits[1] > 1.0, waits
    # The waiting run said who was in its way, through Display.
    waiter_out = out_a if env.record('A', 'lock')['result']['waited'] > 1 else out_b
    assert "waiting (0s of 60s) for lock 'h1' held by playbook guarded.yml" in waiter_out, waiter_out
    assert "task 'lock', host h1, user" in waiter_out


def test_per_host_locks_only_serialise_common_hosts(env):
    # Run A targets h1,h2 and run B h2,h3: only h2 is contended.
    pb = env.playbook('guarded.yml', GUARDED)
    a = env.start(pb, '-e', 'who=A', '-e', 'other=B', '-e', 'target=h1,h2', '--limit', 'h2', tag='A')
    b = env.start(pb, '-e', 'who=B', '-e', 'other=A', '-e', 'target=h2,h3', '--limit', 'h2', tag='B')
    c = env.start(pb, '-e', 'who=C', '-e', 'other=C', '-e', 'target=h3', tag='C')
    for p in (a, b, c):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    spans = journal_sections(env.out / 'journal-h2')
    assert set(spans) == {'A-h2', 'B-h2'} and not overlaps(spans), spans
    # h3's run was not held up by the contention on h2.
    assert env.record('C', 'lock', 'h3')['result']['waited'] < 1.0


def test_shared_locks_overlap(env):
    _two_runs(env, shared=True, hold=3)
    spans = journal_sections(env.out / 'journal-h1')
    assert set(spans) == {'A-h1', 'B-h1'}
    assert overlaps(spans), spans
    for tag in 'AB':
        res = env.record(tag, 'lock')['result']
        assert res['acquired'] and res['mode'] == 'shared' and res['waited'] < 1.0, res
