// Logs go to stderr only (stdout carries the protocol). winston is loaded on
// the first message that passes the level, so a quiet helper never pays for it.
import type { Logger } from 'winston';

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3 } as const;
type Level = keyof typeof LEVELS;

function levelFromEnv(): Level {
  const v = (process.env.LOG_LEVEL ?? 'warn').toLowerCase();
  if (v === 'warning') return 'warn';
  return v in LEVELS ? (v as Level) : 'warn';
}

const threshold: Level = levelFromEnv();
let winston: Logger | undefined;

function logger(): Logger {
  if (!winston) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily, only when a line is due
    const w = require('winston') as typeof import('winston');
    const json = (process.env.HOSTLOCK_LOG_FORMAT ?? '').toLowerCase() === 'json';
    const line = w.format.printf(({ level, message, timestamp, prefix, path, ...rest }) => {
      const where = [prefix, path].filter(Boolean).join(' ');
      const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
      return `${String(timestamp)} hostlock[${process.pid}] ${level.toUpperCase()} ${where ? where + ' ' : ''}${String(message)}${extra}`;
    });
    winston = w.createLogger({
      level: threshold,
      levels: LEVELS,
      format: w.format.combine(w.format.timestamp(), json ? w.format.json() : line),
      transports: [new w.transports.Stream({ stream: process.stderr })],
    });
  }
  return winston;
}

type Meta = Record<string, unknown> & { prefix?: string; path?: string };

function emit(level: Level, message: string, meta?: Meta): void {
  if (LEVELS[level] > LEVELS[threshold]) return;
  const clean: Meta = {};
  for (const [k, v] of Object.entries(meta ?? {})) if (v !== undefined && v !== '') clean[k] = v;
  logger().log(level, message, clean);
}

export const log = {
  error: (m: string, meta?: Meta) => emit('error', m, meta),
  warn: (m: string, meta?: Meta) => emit('warn', m, meta),
  info: (m: string, meta?: Meta) => emit('info', m, meta),
  debug: (m: string, meta?: Meta) => emit('debug', m, meta),
};
