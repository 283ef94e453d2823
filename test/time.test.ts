// The clock and the time stamps every record carries (src/core/time.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isoTime, nowMs, secondsSince } from '../src/core/time';

test('isoTime writes what toISOString writes', () => {
  const dates = [0, 1, 999, 86_399_999, 951_782_400_000, 1_764_759_133_042, 4_102_444_799_999, Date.now()];
  for (let i = 0; i < 2000; i++) dates.push(Math.floor(Math.random() * 253_402_300_799_999));
  for (const ms of dates) assert.equal(isoTime(new Date(ms)), new Date(ms).toISOString(), `at ${ms}`);
  assert.match(isoTime(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test('nowMs is monotonic and in milliseconds', async () => {
  const a = nowMs();
  await new Promise((r) => setTimeout(r, 50));
  const b = nowMs();
  assert.ok(b - a >= 49 && b - a < 5000, `${b - a} ms`);
  assert.ok(secondsSince(a) >= 0.049);
});
