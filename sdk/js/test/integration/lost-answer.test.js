// Lost answers: the proxy forwards the seal, the server commits and answers, the proxy drops the answer.
// The SDK replays; the replay returns the same invoice; the ledger holds exactly one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PosTerminal } from '../../dist/node.js';
import { createMerchant, ledgerInvoices, gaplessProblems } from '../helpers/stack.js';
import { proxiedStack } from '../helpers/proxy.js';

const ctx = proxiedStack();

const isSeal = (req) => /^POST \/v1\/invoices(\/[^/ ]+\/credit-notes)? HTTP/.test(req);

/** Loses the answer of the first attempt of each sale (a client_invoice_id not seen before). */
function firstAttemptOfEachSale() {
  const seen = new Set();
  return (req) => {
    if (!isSeal(req)) return false;
    const m = /"client_invoice_id":"([^"]+)"/.exec(req);
    if (!m || seen.has(m[1])) return false;
    seen.add(m[1]);
    return true;
  };
}

test('a lost answer after the commit: the replay returns the same invoice, the ledger holds one', async () => {
  const m = await createMerchant(ctx.stack, { outlets: 1, terminals: 1 });
  const o = m.outlets[0];
  const t = await PosTerminal.open({
    gatewayUrl: ctx.proxy.url, apiKey: m.pos_keys[o.id], outletId: o.id, posTerminalId: m.terminals[o.id][0], cashierId: m.cashiers[o.id][0],
    currency: o.currency, taxGroups: m.tax_groups, heartbeatIntervalMs: 0, backoff: { initialMs: 100, maxMs: 400 }, requestTimeoutMs: 10000,
  });
  const N = 8;
  // Every first attempt of the next N seals loses its answer.
  await ctx.proxy.setMode('lose-answers', { loseCount: N, loseDelayMs: 20, loseFilter: firstAttemptOfEachSale() });
  const events = [];
  t.on('sealed', (d) => events.push(d));
  const drafts = [];
  for (let i = 0; i < N; i++) drafts.push(await t.sell({ lines: [{ description: `Lost ${i}`, quantity: '1', unit_price: `${10 + i}.00`, tax_group: 'A' }] }, { wait: 0 }));
  assert.equal(await t.drain(60000), true);
  assert.equal(ctx.proxy.lostAnswers, N, 'every answer was lost once');
  await ctx.proxy.setMode('pass');
  const ledger = await ledgerInvoices(ctx.stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
  assert.equal(ledger.length, N, 'one invoice per sale');
  assert.deepEqual(gaplessProblems(ledger, o.code), []);
  for (const d of drafts) {
    const local = t.getDraft(d.client_invoice_id);
    assert.equal(local.state, 'sealed');
    assert.ok(local.attempts >= 2, `replayed (${local.attempts} attempts)`);
    const inLedger = ledger.filter((i) => i.client_invoice_id === d.client_invoice_id);
    assert.equal(inLedger.length, 1);
    assert.equal(local.invoice.id, inLedger[0].id);
    assert.equal(local.invoice.fiscal.fiscal_number, inLedger[0].fiscal.fiscal_number);
    assert.equal(local.invoice.fiscal.signature, inLedger[0].fiscal.signature);
  }
  assert.equal(events.length, N, 'one sealed event per sale');
  // A credit note whose answer is lost is not duplicated either.
  await ctx.proxy.setMode('lose-answers', { loseCount: 1, loseDelayMs: 20, loseFilter: firstAttemptOfEachSale() });
  const sealedOne = t.getDraft(drafts[0].client_invoice_id);
  const cn = await t.refund(sealedOne.invoice, { reason: 'lost answer test' }, { wait: 0 });
  assert.equal(await t.drain(30000), true);
  await ctx.proxy.setMode('pass');
  const after = await ledgerInvoices(ctx.stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
  assert.equal(after.filter((i) => i.client_invoice_id === cn.client_invoice_id).length, 1);
  assert.equal(after.length, N + 1);
  await t.close();
});
