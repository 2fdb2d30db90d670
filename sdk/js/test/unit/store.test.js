import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FileQueueStore } from '../../dist/node.js';

function tmpdir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fiscal-store-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function rec(i, state = 'pending') {
  return { v: 1, client_invoice_id: `id-${String(i).padStart(5, '0')}`, seq: i, kind: 'invoice', state, created_at: new Date(0).toISOString(), outlet_id: 'o', pos_terminal_id: 't', cashier_id: 'c', request: { n: i }, provisional: {}, attempts: 0 };
}

test('put, delete and reload', async () => {
  const file = path.join(tmpdir(), 'q.jsonl');
  let s = await FileQueueStore.open(file);
  await Promise.all([1, 2, 3].map((i) => s.put(rec(i))));
  await s.put({ ...rec(2), state: 'sealed' });
  await s.delete('id-00003');
  await s.close();
  s = await FileQueueStore.open(file);
  const all = (await s.load()).sort((a, b) => a.seq - b.seq);
  assert.deepEqual(all.map((r) => [r.client_invoice_id, r.state]), [['id-00001', 'pending'], ['id-00002', 'sealed']]);
  // Opening compacts: the log now holds exactly the live records.
  assert.equal(fs.readFileSync(file, 'utf8').trim().split('\n').length, 2);
  await s.close();
});

test('a torn last line (crash mid-append) is dropped, earlier records survive', async () => {
  const file = path.join(tmpdir(), 'q.jsonl');
  const s = await FileQueueStore.open(file);
  await s.put(rec(1));
  await s.put(rec(2));
  await s.close();
  fs.appendFileSync(file, '{"p":{"client_invoice_id":"id-00003","seq":3,"sta');
  const s2 = await FileQueueStore.open(file);
  assert.equal(s2.skippedLines, 1);
  assert.deepEqual((await s2.load()).map((r) => r.seq).sort(), [1, 2]);
  await s2.put(rec(4));
  await s2.close();
  const s3 = await FileQueueStore.open(file);
  assert.deepEqual((await s3.load()).map((r) => r.seq).sort(), [1, 2, 4]);
  await s3.close();
});

test('compaction keeps the log bounded and the records intact', async () => {
  const file = path.join(tmpdir(), 'q.jsonl');
  const s = await FileQueueStore.open(file, { compactMinLines: 100 });
  for (let i = 1; i <= 300; i++) await s.put(rec(i));
  for (let i = 1; i <= 300; i++) await s.put({ ...rec(i), state: 'sealed' });
  for (let i = 1; i <= 250; i++) await s.delete(rec(i).client_invoice_id);
  assert.ok(s.compactions >= 2, `compactions: ${s.compactions}`);
  await s.close();
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n').length;
  assert.ok(lines <= 200, `log lines ${lines}`);
  const s2 = await FileQueueStore.open(file);
  const all = await s2.load();
  assert.equal(all.length, 50);
  assert.ok(all.every((r) => r.state === 'sealed' && r.seq > 250));
  await s2.close();
});

test('group commit: many concurrent puts are all durable', async () => {
  const file = path.join(tmpdir(), 'q.jsonl');
  const s = await FileQueueStore.open(file);
  await Promise.all(Array.from({ length: 2000 }, (_, i) => s.put(rec(i + 1))));
  await s.close();
  const s2 = await FileQueueStore.open(file);
  assert.equal((await s2.load()).length, 2000);
  await s2.close();
});

test('the lock keeps a second opener out and is taken over from a dead process', async () => {
  const file = path.join(tmpdir(), 'q.jsonl');
  const s = await FileQueueStore.open(file);
  await assert.rejects(FileQueueStore.open(file), /in use/);
  await s.close();
  // A lock left by a process that no longer exists.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  fs.writeFileSync(`${file}.lock`, `${dead}@${os.hostname()}`);
  const s2 = await FileQueueStore.open(file);
  await s2.close();
  assert.equal(fs.existsSync(`${file}.lock`), false);
});
