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
  // yargs is ESM and finds its files through import.meta.url, which a CJS bundle lacks.
  define: { 'import.meta.url': '__hostlockMetaUrl' },
  banner: { js: "#!/usr/bin/env node\nconst __hostlockMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});
chmodSync('dist/cli.js', 0o755);
