import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PosTerminal, MemoryQueueStore, openNodeTerminal, ValidationError } from '../../dist/node.js';
import { FakeGateway, TAX_GROUPS } from '../helpers/fake-gateway.js';
import { ChaosProxy } from '../helpers/proxy.js';

let gw;
before(async () => {
  gw = await new FakeGateway().start();
});
after(async () => {
  await gw.stop();
});

function tmpdir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fiscal-t-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const FAST = { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.1 };

/** Waits (bounded) until `cond()` holds. */
async function until(cond, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function opts(extra = {}) {
  return {
    gatewayUrl: gw.url, apiKey: 'pos-key-o1', outletId: 'o1', posTerminalId: `t-${Math.random().toString(36).slice(2, 8)}`,
    cashierId: 'cashier-1', currency: 'KES', taxGroups: TAX_GROUPS, heartbeatIntervalMs: 0, backoff: FAST, requestTimeoutMs: 2000, ...extra,
  };
}

const SALE = { lines: [{ description: 'Soda 500ml', quantity: '2', unit_price: '100', tax_group: 'A' }, { description: 'Bread', quantity: 1, unit_price: '55.50', tax_group: 'C' }], payments: [{ method: 'cash', amount: '300' }] };

// The fake computes totals with the SDK's own code: the totals against the real server are in
// test/integration/totals.test.js.
test('sell seals at once when online; the answer is the sealed invoice', async () => {
  const t = await PosTerminal.open(opts());
  const d = await t.sell(SALE);
  assert.equal(d.state, 'sealed');
  assert.ok(d.invoice.fiscal.fiscal_number);
  assert.equal(d.invoice.client_invoice_id, d.client_invoice_id);
  assert.equal(d.invoice.total, d.provisional.total);
  assert.deepEqual(d.invoice.tax_totals, d.provisional.tax_totals);
  assert.equal(d.request.lines[0].unit_price, '100.00');
  assert.equal(t.status.state, 'online');
  assert.equal(t.status.lastSealAt, d.invoice.fiscal.sealed_at);
  await t.close();
});

test('invalid sales are refused before being queued', async () => {
  const t = await PosTerminal.open(opts());
  await assert.rejects(t.sell({ lines: [] }), ValidationError);
  await assert.rejects(t.sell({ lines: [{ description: 'x', quantity: '1', unit_price: '1.001', tax_group: 'A' }] }), ValidationError);
  await assert.rejects(t.sell({ lines: [{ description: 'x', quantity: '1', unit_price: '1', tax_group: 'Q' }] }), ValidationError);
  assert.equal(t.drafts().length, 0);
  await t.close();
});

test('offline: sales stay drafts, then replay in creation order exactly once', async () => {
  const proxy = await new ChaosProxy({ upstreamPort: gw.port }).start();
  await proxy.setMode('refuse');
  const dir = tmpdir();
  const o = opts({ gatewayUrl: proxy.url });
  const t = await openNodeTerminal({ ...o, dataDir: dir });
  const statuses = [];
  t.subscribe((s) => statuses.push(s));
  const drafts = [];
  for (let i = 0; i < 30; i++) drafts.push(await t.sell({ lines: [{ description: `item ${i}`, quantity: '1', unit_price: String(10 + i), tax_group: 'A' }] }, { wait: i === 0 ? 2000 : 0 }));
  assert.equal(drafts[0].state, 'pending', 'a failed attempt releases the waiting sale as a draft');
  assert.equal(t.status.state, 'offline');
  assert.equal(t.status.draftCount, 30);
  // Connections now reset: wait until the terminal has retried into one (an event, not a sleep); nothing seals.
  await proxy.setMode('drop');
  await until(() => proxy.refusedWhileDown >= 2, 'a retry against the resetting gateway');
  assert.equal(t.status.draftCount, 30);
  assert.equal(gw.invoices.filter((i) => i.pos_terminal_id === o.posTerminalId).length, 0);
  await proxy.setMode('pass');
  assert.equal(await t.drain(10000), true);
  assert.equal(t.status.state, 'online');
  const mine = gw.invoices.filter((i) => i.pos_terminal_id === o.posTerminalId);
  assert.deepEqual(mine.map((i) => i.client_invoice_id), drafts.map((d) => d.client_invoice_id), 'sealed once each, in creation order');
  const nums = mine.map((i) => Number(i.fiscal.counter));
  for (let i = 1; i < nums.length; i++) assert.ok(nums[i] > nums[i - 1]);
  assert.ok(statuses.some((s) => s.state === 'offline' && s.draftCount === 30));
  assert.ok(statuses.some((s) => s.state === 'syncing'));
  await t.close();
  await proxy.stop();
});

test('a lost answer after the commit: the replay gets the same invoice, the ledger holds one', async () => {
  const t = await PosTerminal.open(opts());
  gw.faults.push({ commit: true });
  const before = gw.invoices.length;
  const d0 = await t.sell(SALE, { wait: 5000 });
  assert.equal(d0.state, 'pending', 'the lost answer releases the sale as a draft');
  assert.equal(await t.drain(5000), true);
  const d = t.getDraft(d0.client_invoice_id);
  assert.equal(d.state, 'sealed');
  assert.equal(gw.invoices.length, before + 1);
  assert.equal(gw.invoices.filter((i) => i.client_invoice_id === d.client_invoice_id).length, 1);
  assert.ok(d.attempts >= 2);
  await t.close();
});

test('5xx, 429 and 499 CANCELLED retry with backoff; 400 parks the draft as rejected; later drafts go on', async () => {
  const t = await PosTerminal.open(opts());
  // 499 CANCELLED is what a server that was stopping answers through the gateway: not the sale's fault.
  gw.faults.push({ status: 503, code: 14 }, { status: 429, code: 8, retryAfter: 0 }, { status: 500, code: 13 },
    { status: 499, code: 1, message: 'CANCELLED' });
  const a = await t.sell(SALE, { wait: 0 });
  assert.equal((await t.waitFor(a.client_invoice_id, 5000)).state, 'pending');
  assert.equal(await t.drain(5000), true);
  assert.equal(t.getDraft(a.client_invoice_id).state, 'sealed');
  const rejected = [];
  t.on('rejected', (d) => rejected.push(d));
  gw.faults.push({ status: 400, code: 3, message: 'tax group A is not active' });
  const b = await t.sell(SALE, { wait: 0 });
  const c = await t.sell(SALE, { wait: 0 });
  assert.equal(await t.drain(5000), true);
  assert.equal(t.getDraft(b.client_invoice_id).state, 'rejected');
  assert.match(t.getDraft(b.client_invoice_id).reject_reason, /tax group A is not active/);
  assert.equal(t.getDraft(c.client_invoice_id).state, 'sealed');
  assert.equal(t.status.rejectedCount, 1);
  assert.equal(rejected.length, 1);
  assert.deepEqual(t.drafts().map((d) => d.client_invoice_id), [b.client_invoice_id], 'the rejected draft is kept, not dropped');
  await t.close();
});

test('409 ABORTED retries; 409 ALREADY_EXISTS parks as a conflict', async () => {
  const t = await PosTerminal.open(opts());
  gw.faults.push({ status: 409, code: 10, message: 'concurrent seal, retry' });
  const a = await t.sell(SALE, { wait: 3000 });
  assert.equal((await t.waitFor(a.client_invoice_id, 3000)).state, 'sealed');
  gw.faults.push({ status: 409, code: 6, message: 'different body' });
  const b = await t.sell(SALE, { wait: 3000 });
  assert.equal(b.state, 'rejected');
  assert.equal(b.reject_status, 409);
  await t.close();
});

test('401 pauses the queue without rejecting drafts; setApiKey resumes', async () => {
  const t = await PosTerminal.open(opts({ apiKey: 'wrong' }));
  const a = await t.sell(SALE, { wait: 2000 });
  assert.equal(a.state, 'pending');
  assert.equal(t.status.authError, true);
  assert.equal(t.status.state, 'offline');
  t.setApiKey('pos-key-o1');
  assert.equal(await t.drain(5000), true);
  assert.equal(t.getDraft(a.client_invoice_id).state, 'sealed');
  await t.close();
});

test('credit notes: for a sealed invoice and for a sale still in the queue', async () => {
  const proxy = await new ChaosProxy({ upstreamPort: gw.port }).start();
  const t = await PosTerminal.open(opts({ gatewayUrl: proxy.url }));
  const sold = await t.sell(SALE);
  const cn = await t.refund(sold.invoice, { reason: 'damaged', lines: [{ description: 'Soda 500ml', quantity: '1', unit_price: '100', tax_group: 'A' }] });
  assert.equal(cn.state, 'sealed');
  assert.equal(cn.invoice.kind, 'credit_note');
  assert.equal(cn.invoice.original_invoice_id, sold.invoice.id);
  assert.equal(cn.invoice.total, '100.00');
  await proxy.setMode('refuse');
  const offlineSale = await t.sell(SALE, { wait: 0 });
  const offlineRefund = await t.refund(offlineSale, { reason: 'changed mind' }, { wait: 0 });
  assert.equal(offlineRefund.provisional.total, offlineSale.provisional.total);
  await proxy.setMode('pass');
  assert.equal(await t.drain(5000), true);
  const r = t.getDraft(offlineRefund.client_invoice_id);
  assert.equal(r.state, 'sealed');
  assert.equal(r.invoice.original_invoice_id, t.getDraft(offlineSale.client_invoice_id).invoice.id);
  await t.close();
  await proxy.stop();
});

test('a restart resumes the queue from its file', async () => {
  const proxy = await new ChaosProxy({ upstreamPort: gw.port }).start();
  await proxy.setMode('refuse');
  const dir = tmpdir();
  const o = { ...opts({ gatewayUrl: proxy.url }), dataDir: dir };
  let t = await openNodeTerminal(o);
  const ids = [];
  for (let i = 0; i < 10; i++) ids.push((await t.sell(SALE, { wait: 0 })).client_invoice_id);
  await t.close();
  await proxy.setMode('pass');
  t = await openNodeTerminal(o);
  assert.equal(await t.drain(5000), true);
  assert.deepEqual(gw.invoices.filter((i) => i.pos_terminal_id === o.posTerminalId).map((i) => i.client_invoice_id), ids);
  await t.close();
  await proxy.stop();
});

test('heartbeats carry the queue state; a blackholed gateway times out into offline', async () => {
  const proxy = await new ChaosProxy({ upstreamPort: gw.port }).start();
  let now = Date.now() - 3600_000;
  const t = await PosTerminal.open(opts({ gatewayUrl: proxy.url, heartbeatIntervalMs: 60000, requestTimeoutMs: 300, clock: () => now }));
  await t.heartbeat();
  assert.equal(t.status.reachable, true);
  assert.equal(t.status.offlineGraceSeconds, 259200);
  await proxy.setMode('blackhole');
  await t.sell(SALE, { wait: 0 });
  now += 1800_000;
  await t.heartbeat();
  assert.equal(t.status.state, 'offline');
  assert.equal(t.status.oldestDraftAgeSeconds, 1800);
  await proxy.setMode('pass');
  await t.heartbeat();
  const hb = gw.heartbeats.filter((h) => h.terminal === t.posTerminalId);
  const last = hb[hb.length - 1];
  assert.equal(last.draft_count, 1);
  assert.equal(last.oldest_draft_age_seconds, 1800);
  assert.equal(last.outlet_id, 'o1');
  assert.equal(typeof last.sdk_version, 'string');
  assert.equal(await t.drain(5000), true);
  // Measured from the heartbeats above (absent until a call has been timed).
  assert.equal(typeof t.status.gatewayLatencyMs, 'number');
  assert.ok(Number.isFinite(t.status.gatewayLatencyMs), String(t.status.gatewayLatencyMs));
  await t.close();
  await proxy.stop();
});

test('memory store works without a file (kiosk/test use)', async () => {
  const store = new MemoryQueueStore();
  const t = await PosTerminal.open(opts({ store }));
  await t.sell(SALE);
  assert.equal(store.size, 1);
  await t.close();
});
