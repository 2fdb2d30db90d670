#!/usr/bin/env node
// npm run bench -- [--drafts 5000] [--terminals 1] [--outlets 1] [--no-fsync]
//
// Replay rate of the offline queue against the real stack: N drafts are created while the gateway is
// unreachable (a loopback proxy refusing connections), the proxy opens, and the time until every queue is
// drained gives drafts sealed per second. Uses FISCAL_GATEWAY_URL + FISCAL_DEMO_JSON, or starts
// `fiscal up` itself. Each terminal replays in order, one request in flight; terminals run in parallel.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openNodeTerminal } from '../dist/node.js';
import { getStack, releaseStack, createMerchant, ledgerInvoices, gaplessProblems, tempDir } from '../test/helpers/stack.js';
import { ChaosProxy } from '../test/helpers/proxy.js';

const { values } = parseArgs({
  options: {
    drafts: { type: 'string', default: '5000' },
    terminals: { type: 'string', default: '1' },
    outlets: { type: 'string', default: '1' },
    'no-fsync': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
const DRAFTS = Number(values.drafts);
const TERMINALS = Number(values.terminals);
const OUTLETS = Number(values.outlets);

const stack = await getStack();
const u = new URL(stack.gatewayUrl);
const proxy = await new ChaosProxy({ upstreamHost: u.hostname, upstreamPort: Number(u.port) }).start();
const perOutlet = Math.ceil(TERMINALS / OUTLETS);
const m = await createMerchant(stack, { outlets: OUTLETS, terminals: perOutlet, cashiers: 1, name: 'SDK bench' });
const dir = tempDir('fiscal-bench-');
await proxy.setMode('refuse');
const terminals = [];
for (let i = 0; i < TERMINALS; i++) {
  const o = m.outlets[i % OUTLETS];
  terminals.push(await openNodeTerminal({
    dataDir: dir, gatewayUrl: proxy.url, apiKey: m.pos_keys[o.id], outletId: o.id, posTerminalId: m.terminals[o.id][Math.floor(i / OUTLETS)],
    cashierId: m.cashiers[o.id][0], currency: o.currency, taxGroups: m.tax_groups, heartbeatIntervalMs: 0, sealWaitMs: 0,
    backoff: { initialMs: 100, maxMs: 500 }, storeOptions: { fsync: !values['no-fsync'] }, autoStart: false,
  }));
}
const t0 = Date.now();
await Promise.all(terminals.map(async (t, ti) => {
  const n = Math.floor(DRAFTS / TERMINALS) + (ti < DRAFTS % TERMINALS ? 1 : 0);
  for (let i = 0; i < n; i++) {
    await t.sell({ lines: [{ description: `Item ${i}`, quantity: '1', unit_price: `${100 + (i % 900)}.50`, tax_group: 'A' }, { description: 'Bread', quantity: '2', unit_price: '55.50', tax_group: 'E' }] }, { wait: 0 });
  }
}));
const createS = (Date.now() - t0) / 1000;
await proxy.setMode('pass');
const t1 = Date.now();
for (const t of terminals) t.start();
const drained = await Promise.all(terminals.map((t) => t.drain(3600_000)));
const replayS = (Date.now() - t1) / 1000;
const sealed = terminals.reduce((a, t) => a + t.drafts(['sealed']).length, 0);
for (const t of terminals) await t.close();
let problems = [];
let ledger = 0;
for (const o of m.outlets) {
  const invs = await ledgerInvoices(stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
  ledger += invs.length;
  problems = problems.concat(gaplessProblems(invs, o.code));
}
await proxy.stop();
await releaseStack();
const result = {
  drafts: DRAFTS, terminals: TERMINALS, outlets: OUTLETS, fsync: !values['no-fsync'],
  create_seconds: Number(createS.toFixed(2)), drafts_created_per_second: Number((DRAFTS / createS).toFixed(1)),
  replay_seconds: Number(replayS.toFixed(2)), drafts_sealed_per_second: Number((DRAFTS / replayS).toFixed(1)),
  all_drained: drained.every(Boolean), ledger_invoices: ledger, gapless: problems.length === 0,
};
console.log(`created ${DRAFTS} drafts in ${result.create_seconds} s (${result.drafts_created_per_second}/s, fsync ${result.fsync ? 'on' : 'off'})`);
console.log(`replayed ${DRAFTS} drafts from ${TERMINALS} terminal(s) in ${result.replay_seconds} s: ${result.drafts_sealed_per_second} drafts sealed per second`);
console.log(`ledger holds ${ledger} invoices; gapless: ${result.gapless}; sealed records kept locally for reprints: ${sealed}`);
if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
process.exit(result.all_drained && ledger === DRAFTS && result.gapless ? 0 : 1);
