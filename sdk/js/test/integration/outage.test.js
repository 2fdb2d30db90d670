// A 72-hour outage: 10 terminals (2 outlets x 5) keep selling while the gateway is unreachable (a loopback
// proxy that refuses, resets or blackholes connections), 500 drafts each with sale times spread over a
// simulated 72 hours; the gateway comes back; every draft seals exactly once, numbers per outlet stay
// gapless, each terminal's order is kept, sold_at is the sale time, heartbeats reported the backlog.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openNodeTerminal } from '../../dist/node.js';
import { getStack, releaseStack, createMerchant, ledgerInvoices, gaplessProblems, tempDir } from '../helpers/stack.js';
import { ChaosProxy } from '../helpers/proxy.js';

const OUTLETS = 2;
const PER_OUTLET = 5;
const DRAFTS = Number(process.env.FISCAL_IT_OUTAGE_DRAFTS || 500);
const HOURS = 72;

let stack;
let proxy;
const terminals = [];

before(async () => {
  stack = await getStack();
  const u = new URL(stack.gatewayUrl);
  proxy = await new ChaosProxy({ upstreamHost: u.hostname, upstreamPort: Number(u.port) }).start();
});
after(async () => {
  for (const t of terminals) await t.close().catch(() => {});
  await proxy?.stop();
  await releaseStack();
});

test(`outage: ${OUTLETS * PER_OUTLET} terminals x ${DRAFTS} drafts over a simulated ${HOURS} h, then exactly-once replay`, async () => {
  const m = await createMerchant(stack, { outlets: OUTLETS, terminals: PER_OUTLET, cashiers: 2 });
  const dir = tempDir('fiscal-outage-');
  const realStart = Date.now();
  const simStart = realStart - HOURS * 3600_000;
  const step = (HOURS * 3600_000 - 120_000) / DRAFTS; // the last sale 2 minutes before "now"
  const clocks = [];
  await proxy.setMode('refuse');
  for (const o of m.outlets) {
    for (const tid of m.terminals[o.id]) {
      const clock = { now: simStart };
      clocks.push(clock);
      const t = await openNodeTerminal({
        dataDir: dir, gatewayUrl: proxy.url, apiKey: m.pos_keys[o.id], outletId: o.id, posTerminalId: tid,
        cashierId: m.cashiers[o.id][terminals.length % 2], currency: o.currency, taxGroups: m.tax_groups,
        clock: () => clock.now, heartbeatIntervalMs: 3600_000, requestTimeoutMs: 1500,
        backoff: { initialMs: 200, maxMs: 2000, factor: 2, jitter: 0.2 }, sealWaitMs: 0,
      });
      terminals.push(t);
    }
  }
  // Sell: all terminals concurrently, each in its own order; the outage changes character on the way.
  const created = terminals.map(() => []);
  const phases = ['refuse', 'drop', 'blackhole', 'refuse'];
  let phase = 0;
  const sellAll = terminals.map(async (t, ti) => {
    for (let i = 0; i < DRAFTS; i++) {
      clocks[ti].now = simStart + Math.round(i * step + (ti * step) / terminals.length);
      const d = await t.sell({
        lines: [
          { description: `Item ${i}`, quantity: String(1 + (i % 3)), unit_price: `${100 + (i % 50)}.${String(i % 100).padStart(2, '0')}`, tax_group: 'A' },
          { description: 'Bread', quantity: '1', unit_price: '55.50', tax_group: i % 4 === 0 ? 'E' : 'B' },
        ],
        payments: [{ method: i % 2 ? 'cash' : 'mpesa', amount: '1000' }],
      }, { wait: 0 });
      assert.equal(d.state, 'pending');
      created[ti].push(d);
      if (ti === 0 && i > 0 && i % Math.ceil(DRAFTS / phases.length) === 0) {
        phase = Math.min(phase + 1, phases.length - 1);
        await proxy.setMode(phases[phase]);
      }
    }
  });
  await Promise.all(sellAll);
  await proxy.setMode('refuse');
  const sellSeconds = (Date.now() - realStart) / 1000;
  for (const [ti, t] of terminals.entries()) {
    const s = t.status;
    assert.equal(s.draftCount, DRAFTS, `terminal ${ti} holds its drafts`);
    assert.equal(s.state, 'offline');
    clocks[ti].now = Date.now();
    assert.ok(t.status.oldestDraftAgeSeconds >= (HOURS - 1) * 3600, `oldest draft age ${t.status.oldestDraftAgeSeconds}`);
  }
  // The queues are on disk: close and reopen every terminal (a restart during the outage).
  const reopened = [];
  for (const t of terminals) {
    const o = m.outlets.find((x) => x.id === t.outletId);
    await t.close();
    const clock = { now: Date.now() };
    reopened.push(await openNodeTerminal({
      dataDir: dir, gatewayUrl: proxy.url, apiKey: m.pos_keys[o.id], outletId: o.id, posTerminalId: t.posTerminalId,
      cashierId: t.cashierId, currency: o.currency, taxGroups: m.tax_groups, clock: () => clock.now,
      heartbeatIntervalMs: 3600_000, requestTimeoutMs: 10000, backoff: { initialMs: 200, maxMs: 2000, factor: 2, jitter: 0.2 },
      autoStart: false,
    }));
  }
  terminals.splice(0, terminals.length, ...reopened);
  for (const [ti, t] of terminals.entries()) assert.equal(t.drafts().length, DRAFTS, `terminal ${ti} reloaded its queue`);

  // The gateway comes back: the first heartbeat reports the backlog, then everything replays.
  await proxy.setMode('pass');
  const replayStart = Date.now();
  for (const t of terminals) await t.heartbeat();
  for (const t of terminals) t.start();
  const outletForHb = m.outlets[0];
  const fleet = await fetch(`${stack.gatewayUrl}/v1/terminals?outlet_id=${outletForHb.id}`, { headers: { Authorization: `Bearer ${m.admin_key}` } }).then((r) => r.json());
  const hb = (fleet.terminals ?? []).filter((x) => m.terminals[outletForHb.id].includes(x.pos_terminal_id));
  assert.equal(hb.length, PER_OUTLET, JSON.stringify(fleet).slice(0, 500));
  for (const x of hb) {
    assert.ok(Number(x.oldest_draft_age_seconds) >= (HOURS - 1) * 3600, `heartbeat oldest age ${x.oldest_draft_age_seconds}`);
  }
  const drained = await Promise.all(terminals.map((t) => t.drain(240000)));
  const replaySeconds = (Date.now() - replayStart) / 1000;
  assert.deepEqual(drained, terminals.map(() => true), 'every queue drained');
  for (const t of terminals) {
    assert.equal(t.status.draftCount, 0);
    assert.equal(t.status.rejectedCount, 0);
    assert.equal(t.status.state, 'online');
  }

  // The ledger: exactly once, gapless per outlet, order per terminal, sale times kept.
  let total = 0;
  for (const o of m.outlets) {
    const invs = await ledgerInvoices(stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
    total += invs.length;
    assert.equal(invs.length, PER_OUTLET * DRAFTS, `outlet ${o.code} holds every sale once`);
    assert.deepEqual(gaplessProblems(invs, o.code), []);
    const ids = new Set(invs.map((i) => i.client_invoice_id));
    assert.equal(ids.size, invs.length, 'no duplicate client_invoice_id');
    for (const [ti, t] of terminals.entries()) {
      if (t.outletId !== o.id) continue;
      const mine = invs.filter((i) => i.pos_terminal_id === t.posTerminalId).sort((a, b) => Number(a.fiscal.counter) - Number(b.fiscal.counter));
      assert.deepEqual(mine.map((i) => i.client_invoice_id), created[ti].map((d) => d.client_invoice_id), `terminal ${t.posTerminalId} order kept`);
      for (let i = 0; i < mine.length; i += 97) {
        assert.equal(Date.parse(mine[i].sold_at), Date.parse(created[ti][i].sold_at), 'sold_at is the sale time');
      }
      const soldSpanH = (Date.parse(mine[mine.length - 1].sold_at) - Date.parse(mine[0].sold_at)) / 3600_000;
      assert.ok(soldSpanH > HOURS - 1, `sales span ${soldSpanH.toFixed(1)} h`);
    }
  }
  const rate = total / replaySeconds;
  process.stderr.write(`# outage: ${total} drafts created in ${sellSeconds.toFixed(1)} s, replayed in ${replaySeconds.toFixed(1)} s (${rate.toFixed(1)} drafts/s); proxy refused/reset ${proxy.refusedWhileDown} connections\n`);
});
