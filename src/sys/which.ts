// Whether a command can be started, found as execvp(3) finds it: a name with a
// slash is that path, a bare name the first executable regular file of that
// name in PATH.
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export type Unrunnable = 'not found' | 'not executable' | 'a directory';

// Undefined when the command can be started, else why not.
export function whyUnrunnable(file: string): Unrunnable | undefined {
  if (file.includes('/')) {
    let st;
    try {
      st = statSync(file);
    } catch {
      return 'not found';
    }
    if (st.isDirectory()) return 'a directory';
    try {
      accessSync(file, constants.X_OK);
    } catch {
      return 'not executable';
    }
    return undefined;
  }
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const p = join(d || '.', file);
    try {
      // No exception for the usual miss: each would cost a stack trace.
      if (!statSync(p, { throwIfNoEntry: false })?.isFile()) continue;
      accessSync(p, constants.X_OK);
      return undefined;
    } catch {
      /* not here */
    }
  }
  return 'not found';
}
