// Build: type-check and compile everything to build/ (tests import it), then
// bundle the CLI into one file, dist/cli.js, so a cold start reads one script.
import { execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { build } from 'esbuild';

execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });

await build({
  entryPoints: ['src/cli.ts'],
  outfile: 'dist/cli.js',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['fs-ext'],
  banner: { js: '#!/usr/bin/env node' },
  logLevel: 'warning',
});
chmodSync('dist/cli.js', 0o755);
