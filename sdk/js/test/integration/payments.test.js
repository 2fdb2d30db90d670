// terminal.pay() against the real stack (`fiscal up`: the payments service and the provider simulators,
// whose default is "the customer confirms after 0.2 s"): a sale still in the offline queue is paid, then
// sealed, and the invoice shows the payment; a pay-first sale is sealed by the confirmation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosTerminal, isUuidv7 } from '../../dist/node.js';
import { getStack, releaseStack, createMerchant } from '../helpers/stack.js';

let stack;
let m;
let outlet;
let t;
/** While true, the terminal cannot reach POST /v1/invoices (its sales stay in the offline queue). */
let sealsDown = false;
const posted = [];

before(async () => {
  stack = await getStack();
  m = await createMerchant(stack, { outlets: 1, terminals: 1, cashiers: 1 });
  outlet = m.outlets[0];
  const gatedFetch = async (url, init = {}) => {
    const path = new URL(url).pathname;
    if (path === '/v1/payments' && init.method === 'POST') posted.push(JSON.parse(init.body));
    if (sealsDown && path === '/v1/invoices') throw new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } });
    return fetch(url, init);
  };
  t = await PosTerminal.open({
    gatewayUrl: stack.gatewayUrl, apiKey: m.pos_keys[outlet.id], outletId: outlet.id, posTerminalId: m.terminals[outlet.id][0],
    cashierId: m.cashiers[outlet.id][0], currency: outlet.currency, taxGroups: m.tax_groups, heartbeatIntervalMs: 0, sealWaitMs: 20000,
    backoff: { initialMs: 100, maxMs: 500, factor: 2, jitter: 0.1 }, fetch: gatedFetch,
  });
});
after(async () => {
  await t?.close();
  await releaseStack();
});

const SALE = { lines: [{ description: 'Sukari 2kg', quantity: '1', unit_price: '310', tax_group: 'A' }] };
const PHONE = '254712345678';

test('a draft still in the offline queue is paid by M-Pesa, then sealed with the payment on it', async () => {
  sealsDown = true;
  const d = await t.sell(SALE, { wait: 1000 });
  assert.equal(d.state, 'pending');
  const events = [];
  t.on('payment', (p) => events.push(p.status));
  const p = await t.pay({ provider: 'mpesa', phone: PHONE, draft: d }, { pollIntervalMs: 250, waitMs: 60000 });
  assert.equal(p.status, 'confirmed', JSON.stringify(p));
  assert.equal(p.client_invoice_id, d.client_invoice_id);
  assert.equal(p.amount, d.provisional.total);
  assert.ok(p.provider_reference, 'the M-Pesa receipt');
  assert.ok(!p.phone_masked.includes(PHONE), p.phone_masked);
  assert.equal(events.at(-1), 'confirmed');
  assert.ok(isUuidv7(posted.at(-1).client_payment_id));
  assert.equal(posted.at(-1).client_invoice_id, d.client_invoice_id);

  sealsDown = false;
  assert.ok(await t.drain(30000), 'the queue sealed the sale');
  const sealed = t.getDraft(d.client_invoice_id);
  assert.equal(sealed.state, 'sealed');
  const inv = await t.getInvoice(sealed.invoice.id);
  assert.equal(inv.payment_status, 'paid', JSON.stringify(inv.payments));
  const line = inv.payments.find((x) => x.payment_id === p.id);
  assert.ok(line, 'the held payment is on the invoice');
  assert.equal(line.method, 'mpesa');
  assert.equal(line.reference, p.provider_reference);
  assert.equal(inv.fiscal.signature, sealed.invoice.fiscal.signature, 'the seal is the one the till got');
  const listed = await t.listPayments({ client_invoice_id: d.client_invoice_id });
  assert.deepEqual(listed.payments.map((x) => x.id), [p.id]);
});

test('pay-first: the confirmation seals the attached sale, once', async () => {
  const p = await t.pay({ provider: 'airtel_money', phone: PHONE, sale: SALE }, { pollIntervalMs: 250, waitMs: 60000 });
  assert.equal(p.status, 'confirmed', JSON.stringify(p));
  assert.equal(p.sale_state, 'sealed');
  assert.ok(p.invoice_id);
  const inv = await t.getInvoice(p.invoice_id);
  assert.equal(inv.client_invoice_id, posted.at(-1).sale.client_invoice_id);
  assert.equal(inv.total, p.amount);
  assert.equal(inv.payment_status, 'paid');
  assert.equal(inv.payments.filter((x) => x.method === 'airtel_money').length, 1);
});
