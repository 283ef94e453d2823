// Goal 2: playbook overhead. The same playbook — TASKS tasks (acquired and
// released in turn) on HOSTS local hosts — once with hostlock.core.lock
// (per-run agent over its socket) and once with a pure-Python fcntl action
// plugin (bench/action_plugins/fcntl_lock.py); whole ansible-playbook wall
// time, runs alternating, medians. 2: 10 tasks; 2b: 40 tasks, where the
// per-task cost outweighs the agent's start; 2b-floor, 2b-null-node and
// 2b-null-python (info): 2b's playbook with less and less of hostlock in it
// (below). Needs the venv (make venv).
import { join } from 'node:path';
import { alternate, haveAnsible, PLAYBOOK_BIN, runPlaybook, stage, writePlaybook } from './ansible';
import { PROTOCOL } from '../src/core/version';
import { median, note, report, rounds, size, ROOT } from './lib';

// Subjects beside hostlock.core.lock, reported for information: `floor` is
// bench/action_plugins/agent_floor.py, which reaches the run's real agent as
// hostlock.core.lock does (start, connect, one round trip) and locks nothing;
// `null-node` and `null-python` run hostlock.core.lock itself against an agent
// that answers at once and holds nothing (bench/null-agent.ts, a Node process
// with only its built-ins; bench/null_agent.py, a Python one): what a per-run
// agent costs in Node, and in a process that starts fast and does no work.
type Subject = 'lock' | 'floor' | 'null-node' | 'null-python';

const SUBJECTS: Record<Subject, { action: string; what: string; helper?: string }> = {
  lock: { action: 'hostlock.core.lock', what: 'hostlock.core.lock' },
  floor: { action: 'agent_floor', what: 'agent_floor (reach the agent, lock nothing)' },
  'null-node': {
    action: 'hostlock.core.lock',
    what: 'hostlock.core.lock against a Node agent that holds nothing',
    helper: `${process.execPath} ${join(ROOT, 'build', 'bench', 'null-agent.js')} --protocol ${PROTOCOL}`,
  },
  'null-python': {
    action: 'hostlock.core.lock',
    what: 'hostlock.core.lock against a Python agent that holds nothing',
    helper: `${join(ROOT, '.venv', 'bin', 'python')} ${join(ROOT, 'bench', 'null_agent.py')} --protocol ${PROTOCOL}`,
  },
};

async function measure(
  goal: string,
  tasks: number,
  hosts: number,
  rounds: number,
  target: number,
  kind: Subject = 'lock',
): Promise<void> {
  const subject = SUBJECTS[kind];
  const s = stage(`playbook${goal}`, hosts);
  const withHostlock = join(s.dir, 'hostlock.yml');
  const withFcntl = join(s.dir, 'fcntl.yml');
  writePlaybook(withHostlock, subject.action, tasks);
  writePlaybook(withFcntl, 'fcntl_lock', tasks);
  const subjectStage = subject.helper ? { ...s, env: { ...s.env, HOSTLOCK_HELPER: subject.helper } } : s;
  let t;
  try {
    t = await alternate(
      () => runPlaybook(withHostlock, subjectStage),
      () => runPlaybook(withFcntl, s),
      rounds,
    );
  } finally {
    s.cleanup();
  }
  note(
    `${goal}: ${subject.what}: ${t.subject.map((x) => x.toFixed(0)).join(' ')} ms; fcntl plugin: ${t.anchor.map((x) => x.toFixed(0)).join(' ')} ms`,
  );
  const a = median(t.subject);
  const b = median(t.anchor);
  const info = kind !== 'lock';
  report({
    goal,
    what: `playbook ${tasks} tasks × ${hosts} hosts, ${subject.what} (median of ${rounds})`,
    figure: a,
    unit: 'ms',
    anchor: b,
    anchorWhat: 'same playbook, pure-Python fcntl action plugin',
    target: info ? 'info' : `≤ ${target}×`,
    met: a / b <= target,
    info,
  });
}

async function main(): Promise<void> {
  if (!haveAnsible()) {
    note(`skipped: ${PLAYBOOK_BIN} is missing (make venv)`);
    process.stdout.write('goal 2: skipped, no ansible-playbook in .venv (run make venv)\n');
    process.stdout.write(
      'BENCH ' + JSON.stringify({ goal: '2', skipped: true, what: 'playbook overhead', target: '≤ 1.15×' }) + '\n',
    );
    return;
  }
  await measure('2', size(10, 2), size(4, 1), rounds(9, 1), 1.15);
  await measure('2b', size(40, 2), size(4, 1), rounds(7, 1), 1.1);
  await measure('2b-floor', size(40, 2), size(4, 1), rounds(7, 1), 1.1, 'floor');
  await measure('2b-null-node', size(40, 2), size(4, 1), rounds(7, 1), 1.1, 'null-node');
  await measure('2b-null-python', size(40, 2), size(4, 1), rounds(7, 1), 1.1, 'null-python');
}

main().catch((err) => {
  process.stderr.write(`playbook benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
