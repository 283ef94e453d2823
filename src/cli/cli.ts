// The `hostlock` executable (bundled as dist/cli.js), the one place that picks
// how a command runs. Bare `serve` and plain `agent` — started once per Python
// Lock or per playbook run — and `flock` and plain `run`, started as often as a
// script loop asks, take the fast path (fastpath.ts), each from a bundle of its
// own; everything else loads the full command line (main.ts, with yargs),
// which the build keeps in its own bundle (dist/main.js). This file is the
// dispatcher alone, so a start compiles only the command it runs.
import { loadBundle } from './bundles';
import { runMain } from './exit';
import { fastCommand } from './fastpath';
import { takeInheritedIgnored } from './sigign';
import { takeExtraCaCerts } from '../sys/extraca';

takeInheritedIgnored();
takeExtraCaCerts();

const argv = process.argv.slice(2);
// Not import(): Node would run its ESM lexer over the 1 MB bundle.
runMain(fastCommand(argv) ?? (() => loadBundle<typeof import('./main')>('main').main(argv)));
