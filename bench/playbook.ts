// Goal 2: playbook overhead. The same playbook — TASKS tasks (acquired and
// released in turn) on HOSTS local hosts — once with hostlock.core.lock
// (per-run agent over its socket) and once with a pure-Python fcntl action
// plugin (bench/action_plugins/fcntl_lock.py); whole ansible-playbook wall
// time, runs alternating, medians. 2: 10 tasks; 2b: 40 tasks, where the
// per-task cost outweighs the agent's start; 2b-floor (info): 2b's playbook with
// an action that only reaches the agent. Needs the venv (make venv).
import { join } from 'node:path';
import { alternate, haveAnsible, PLAYBOOK_BIN, runPlaybook, stage, writePlaybook } from './ansible';
import { median, note, report, size } from './lib';

// `floor`: the subject is bench/action_plugins/agent_floor.py, which reaches the
// run's agent as hostlock.core.lock does (start, connect, one round trip) and
// locks nothing: what any per-run agent costs, reported for information.
async function measure(
  goal: string,
  tasks: number,
  hosts: number,
  rounds: number,
  target: number,
  floor = false,
): Promise<void> {
  const s = stage(`playbook${goal}`, hosts);
  const withHostlock = join(s.dir, 'hostlock.yml');
  const withFcntl = join(s.dir, 'fcntl.yml');
  writePlaybook(withHostlock, floor ? 'agent_floor' : 'hostlock.core.lock', tasks);
  writePlaybook(withFcntl, 'fcntl_lock', tasks);
  let t;
  try {
    t = await alternate(
      () => runPlaybook(withHostlock, s),
      () => runPlaybook(withFcntl, s),
      rounds,
    );
  } finally {
    s.cleanup();
  }
  const subject = floor ? 'agent_floor (reach the agent, lock nothing)' : 'hostlock.core.lock';
  note(
    `${goal}: ${subject}: ${t.subject.map((x) => x.toFixed(0)).join(' ')} ms; fcntl plugin: ${t.anchor.map((x) => x.toFixed(0)).join(' ')} ms`,
  );
  const a = median(t.subject);
  const b = median(t.anchor);
  report({
    goal,
    what: `playbook ${tasks} tasks × ${hosts} hosts, ${subject} (median of ${rounds})`,
    figure: a,
    unit: 'ms',
    anchor: b,
    anchorWhat: 'same playbook, pure-Python fcntl action plugin',
    target: floor ? 'info' : `≤ ${target}×`,
    met: a / b <= target,
    info: floor,
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
  await measure('2', size(10, 2), size(4, 1), size(9, 1), 1.15);
  await measure('2b', size(40, 2), size(4, 1), size(7, 1), 1.1);
  await measure('2b-floor', size(40, 2), size(4, 1), size(7, 1), 1.1, true);
}

main().catch((err) => {
  process.stderr.write(`playbook benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
