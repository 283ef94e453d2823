// Writes the baseline `make bench` compares against (bench/baseline.json)
// from the logs of several runs: `node build/bench/baseline.js OUT LOG...`.
// Per figure: the median of the runs' ratios and their spread (bench/compare.ts).
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { makeBaseline, parseRows } from './compare';

const [out, ...logs] = process.argv.slice(2);
if (!out || logs.length === 0) {
  process.stderr.write('usage: baseline.js OUT.json LOG...\n');
  process.exit(2);
}
const runs = logs.map((f) => parseRows(readFileSync(f, 'utf8')));
const baseline = makeBaseline(runs, {
  machine: `${cpus().length} cores, Node ${process.version}`,
  measured: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
  command: process.env.HOSTLOCK_BENCH_BASELINE_COMMAND || `make bench-baseline (${logs.length} runs)`,
});
writeFileSync(out, JSON.stringify(baseline, null, 2) + '\n');
const n = Object.keys(baseline.figures).length;
process.stderr.write(`[bench] ${out}: ${n} figures from ${logs.length} runs\n`);
