// `hostlock timeline`: who held which lock when, and who waited for whom,
// drawn from the history of a lock directory, on the terminal and as SVG.
import { accessSync, constants, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { UsageError } from '../exit';
import { backendOption, queryHistory, SINCE_FORMS } from './history';
import { svg } from './timeline/svg';
import { chart, legend, marksText, waitsText } from './timeline/terminal';
import { buildTimeline } from './timeline/timeline';

// Where the SVG goes is checked before anything is read or drawn.
function checkSvgPath(path: string): void {
  if (path === '') throw new UsageError('--svg needs a file name');
  const folder = dirname(resolve(path));
  const found = statSync(folder, { throwIfNoEntry: false });
  if (!found)
    throw new UsageError(`--svg ${path}: directory ${folder} does not exist; create it or write the SVG elsewhere`);
  if (!found.isDirectory()) throw new UsageError(`--svg ${path}: ${folder} is not a directory`);
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory())
    throw new UsageError(`--svg ${path} is a directory: give a file name in it`);
  try {
    accessSync(folder, constants.W_OK);
  } catch {
    throw new UsageError(`--svg ${path}: directory ${folder} is not writable; write the SVG elsewhere`);
  }
}

// Colour on a terminal, unless NO_COLOR; FORCE_COLOR for a pipe.
function useColour(): boolean {
  if (process.env.NO_COLOR) return false;
  return Boolean(process.env.FORCE_COLOR) || Boolean(process.stdout.isTTY);
}

interface Args {
  dir?: string;
  backend?: string;
  since?: string;
  svg?: string;
  width?: number;
}

export const timelineCommand: CommandModule<object, Args> = {
  command: 'timeline',
  describe: 'draw who held which lock when, and who waited for whom, from the history',
  builder: (y: Argv) =>
    y
      .option('dir', { type: 'string', describe: 'lock directory' })
      .option('backend', backendOption)
      .option('since', { type: 'string', describe: `from: ${SINCE_FORMS} (default: all)` })
      .option('svg', { type: 'string', describe: 'also write the timeline as SVG to this file' })
      .option('width', { type: 'number', describe: 'columns of the terminal chart' }),
  handler: async (a) => {
    if (a.svg !== undefined) checkSvgPath(a.svg);
    const { dir, records } = await queryHistory(a);
    const tl = buildTimeline(records);
    const labels = Math.min(24, Math.max(4, ...tl.locks.map((l) => l.length)));
    const width = a.width ?? Math.max(40, Math.min(110, (process.stdout.columns || 100) - labels - 4));
    if (!tl.locks.length) process.stdout.write(`no history in ${dir}${a.since ? ` since ${a.since}` : ''}\n`);
    else {
      const colour = useColour();
      process.stdout.write(`${chart(tl, width, colour)}\n${legend(tl, colour)}\n`);
      const w = waitsText(tl);
      if (w) process.stdout.write(`who waited for whom:\n${w}\n`);
      const m = marksText(tl);
      if (m) process.stdout.write(`timeouts, deadlocks, breaks and lost holds:\n${m}\n`);
    }
    if (a.svg) {
      const heading = `hostlock timeline: ${tl.runs.length} runs, ${tl.locks.length} locks`;
      writeFileSync(a.svg, svg(tl, heading, dir));
      process.stdout.write(`SVG timeline: ${a.svg}\n`);
    }
    process.exitCode = 0;
  },
};
