import { test } from 'node:test';
import assert from 'node:assert/strict';
import { uuidv7, isUuidv7, uuidv7Time } from '../../dist/index.js';

test('uuidv7 format, timestamp and monotonic order', () => {
  const t = Date.UTC(2025, 10, 23, 12, 0, 0);
  const ids = [];
  for (let i = 0; i < 5000; i++) ids.push(uuidv7(t));
  for (const id of ids) assert.ok(isUuidv7(id), id);
  assert.equal(uuidv7Time(ids[0]), t);
  const sorted = [...ids].sort();
  assert.deepEqual(sorted, ids, 'ids from one clock are strictly increasing');
  assert.equal(new Set(ids).size, ids.length);
  // A clock that steps back keeps the order.
  const later = uuidv7(t - 10000);
  assert.ok(later > ids[ids.length - 1]);
});
