// terminal.pay(): the request it makes, its one client_payment_id across retries, following the payment to
// its final state with 'payment' events, drafts still in the offline queue, pay-first sales, and what it
// refuses before calling anyone. The fake gateway seals; the payments routes are faked here (fetch wrapper)
// as the REST contract describes them: the real service is exercised in test/integration/payments.test.js.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosTerminal, ValidationError, ApiError, isUuidv7, isPaymentSettled } from '../../dist/index.js';
import { FakeGateway, TAX_GROUPS } from '../helpers/fake-gateway.js';

let gw;
before(async () => {
  gw = await new FakeGateway().start();
});
after(async () => {
  await gw.stop();
});

const FAST = { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.1 };
const SALE = { lines: [{ description: 'Soda 500ml', quantity: '2', unit_price: '100', tax_group: 'A' }] };

/**
 * The payments API of the REST contract, in memory: idempotent on (outlet, client_payment_id); a payment
 * moves along `script` (one status per GET) and records every push to the phone.
 */
class FakePayments {
  constructor() {
    this.payments = new Map();
    this.byClientId = new Map();
    this.posts = [];
    this.gets = 0;
    this.pushes = 0;
    /** Statuses (or {status, sale_state, ...}) the next GETs reveal, in order. */
    this.script = ['pending', 'confirmed'];
    /** Failures for the next POSTs: 'lost-answer' (created, answer dropped), 'refuse' (connection), or {status, code, message}. */
    this.postFaults = [];
  }

  json(status, body) {
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
  }

  fetch = async (url, init = {}) => {
    const u = new URL(url);
    if (!u.pathname.startsWith('/v1/payments')) return fetch(url, init);
    if (u.pathname === '/v1/payments' && init.method === 'POST') {
      const body = JSON.parse(init.body);
      this.posts.push(body);
      const fault = this.postFaults.shift();
      if (fault === 'refuse') throw new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } });
      if (fault && fault !== 'lost-answer') return this.json(fault.status, { code: fault.code, message: fault.message, details: [] });
      const key = `${body.outlet_id}/${body.client_payment_id}`;
      let p = this.byClientId.get(key);
      if (!p) {
        this.pushes++;
        p = {
          id: `pay-${this.payments.size + 1}`, outlet_id: body.outlet_id, provider: body.provider, amount: body.amount, currency: body.currency,
          phone_masked: `${body.phone.slice(0, 4)}******${body.phone.slice(-2)}`, status: 'pending', status_reason: '',
          invoice_id: body.invoice_id ?? '', client_invoice_id: body.client_invoice_id ?? body.sale?.client_invoice_id ?? '',
          client_payment_id: body.client_payment_id, provider_reference: '', provider_request_id: `ws_CO_${this.payments.size + 1}`,
          confirmed_amount: '', amount_mismatch: false, payment_url: '', sale_state: body.sale ? 'waiting' : 'not_applicable',
        };
        this.payments.set(p.id, p);
        this.byClientId.set(key, p);
      }
      if (fault === 'lost-answer') throw new TypeError('fetch failed', { cause: { code: 'ECONNRESET' } });
      return this.json(200, p);
    }
    const m = /^\/v1\/payments\/([^/]+)$/.exec(u.pathname);
    if (m && init.method === 'GET') {
      this.gets++;
      const p = this.payments.get(decodeURIComponent(m[1]));
      if (!p) return this.json(404, { code: 5, message: 'payment not found', details: [] });
      const step = this.script.shift();
      if (step) Object.assign(p, typeof step === 'string' ? { status: step } : step);
      if (p.status === 'confirmed' && !p.provider_reference) Object.assign(p, { provider_reference: 'SFT7X9K2LM', confirmed_amount: p.amount });
      return this.json(200, p);
    }
    if (u.pathname === '/v1/payments' && init.method === 'GET') {
      const list = [...this.payments.values()].filter((p) => !u.searchParams.get('client_invoice_id') || p.client_invoice_id === u.searchParams.get('client_invoice_id'));
      return this.json(200, { payments: list, next_page_token: '' });
    }
    return this.json(404, { code: 5, message: 'no route', details: [] });
  };
}

async function terminal(payments, extra = {}) {
  return PosTerminal.open({
    gatewayUrl: gw.url, apiKey: 'pos-key-o1', outletId: 'o1', posTerminalId: `t-${Math.random().toString(36).slice(2, 8)}`,
    cashierId: 'cashier-1', currency: 'KES', taxGroups: TAX_GROUPS, heartbeatIntervalMs: 0, backoff: FAST, requestTimeoutMs: 2000,
    fetch: payments.fetch, ...extra,
  });
}

const QUICK = { pollIntervalMs: 20, waitMs: 5000 };

test('pay for a sealed sale: the invoice id, a UUIDv7 client_payment_id, events until confirmed', async () => {
  const payments = new FakePayments();
  const t = await terminal(payments);
  const d = await t.sell(SALE);
  assert.equal(d.state, 'sealed');
  const seen = [];
  t.on('payment', (p) => seen.push(p.status));
  const p = await t.pay({ provider: 'mpesa', phone: '+254 712 345 678', draft: d }, QUICK);
  assert.equal(p.status, 'confirmed');
  assert.equal(p.provider_reference, 'SFT7X9K2LM');
  assert.ok(isPaymentSettled(p));
  const [sent] = payments.posts;
  assert.deepEqual(Object.keys(sent).sort(), ['amount', 'client_payment_id', 'currency', 'invoice_id', 'outlet_id', 'phone', 'provider']);
  assert.equal(sent.invoice_id, d.invoice.id);
  assert.equal(sent.amount, '200.00', 'the sale total by default, in the currency\'s units');
  assert.equal(sent.phone, '254712345678');
  assert.equal(sent.outlet_id, 'o1');
  assert.ok(isUuidv7(sent.client_payment_id));
  assert.deepEqual(seen, ['pending', 'confirmed'], 'one event per change, the first for the accepted request');
  await t.close();
});

test('a draft still in the offline queue is paid by client_invoice_id', async () => {
  const payments = new FakePayments();
  const t = await terminal(payments);
  // The cloud cannot seal right now (the ledger is unavailable): the sale stays a draft.
  gw.faults.push(...Array.from({ length: 50 }, () => ({ status: 503, code: 14 })));
  const d = await t.sell(SALE, { wait: 0 });
  assert.equal(d.state, 'pending');
  const p = await t.pay({ provider: 'airtel_money', phone: '254733000111', draft: d }, QUICK);
  assert.equal(p.status, 'confirmed');
  const [sent] = payments.posts;
  assert.equal(sent.client_invoice_id, d.client_invoice_id);
  assert.equal(sent.invoice_id, undefined);
  assert.equal(sent.amount, d.provisional.total);
  assert.equal(t.getDraft(d.client_invoice_id).state, 'pending', 'paying never waits for the seal, nor the seal for paying');
  gw.faults.length = 0;
  assert.ok(await t.drain(5000));
  assert.equal(t.getDraft(d.client_invoice_id).state, 'sealed');
  // Paying by clientInvoiceId after it was sealed uses the invoice id.
  await t.pay({ provider: 'mpesa', phone: '254712345678', clientInvoiceId: d.client_invoice_id, amount: '50' }, { waitMs: 0 });
  assert.equal(payments.posts[1].invoice_id, t.getDraft(d.client_invoice_id).invoice.id);
  assert.equal(payments.posts[1].amount, '50.00');
  await t.close();
});

test('a lost answer or a refused connection: the POST is retried with the same client_payment_id, one push', async () => {
  const payments = new FakePayments();
  payments.postFaults.push('lost-answer', 'refuse');
  const t = await terminal(payments);
  const p = await t.pay({ provider: 'mpesa', phone: '254712345678', invoiceId: 'inv-1', amount: '99.5' }, QUICK);
  assert.equal(p.status, 'confirmed');
  assert.equal(payments.posts.length, 3);
  assert.equal(new Set(payments.posts.map((b) => b.client_payment_id)).size, 1, 'the same client_payment_id every time');
  assert.equal(payments.pushes, 1, 'the phone was prompted once');
  // A second pay() is another payment: another client_payment_id.
  await t.pay({ provider: 'mpesa', phone: '254712345678', invoiceId: 'inv-1', amount: '99.5' }, { waitMs: 0 });
  assert.notEqual(payments.posts[3].client_payment_id, payments.posts[0].client_payment_id);
  await t.close();
});

test('a provider error is not retried: it rejects at once with the cloud\'s reason', async () => {
  const payments = new FakePayments();
  payments.postFaults.push({ status: 503, code: 14, message: 'mpesa is unavailable: no answer within 10 s' });
  const t = await terminal(payments);
  const err = await t.pay({ provider: 'mpesa', phone: '254712345678', invoiceId: 'inv-1', amount: '10' }, QUICK).catch((e) => e);
  assert.ok(err instanceof ApiError, String(err));
  assert.equal(err.status, 503);
  assert.match(err.message, /mpesa is unavailable/);
  assert.equal(payments.posts.length, 1);
  await t.close();
});

test('still pending at the deadline: pay() resolves with the pending payment; it can be looked up later', async () => {
  const payments = new FakePayments();
  payments.script = Array.from({ length: 1000 }, () => 'pending');
  const t = await terminal(payments);
  const p = await t.pay({ provider: 'orange_money', phone: '2250700000001', invoiceId: 'inv-2', amount: '1000' }, { pollIntervalMs: 20, waitMs: 200 });
  assert.equal(p.status, 'pending');
  assert.ok(payments.gets >= 2 && payments.gets < 50, `followed it by polling (${payments.gets} GETs)`);
  assert.equal((await t.getPayment(p.id)).id, p.id);
  await t.close();
});

test('pay-first: the sale goes with the payment; a cancelled payment ends not_sealed', async () => {
  const payments = new FakePayments();
  payments.script = ['pending', { status: 'cancelled', status_reason: 'Request cancelled by user', sale_state: 'not_sealed' }];
  const t = await terminal(payments);
  const events = [];
  t.on('payment', (p) => events.push(`${p.status}/${p.sale_state}`));
  const p = await t.pay({ provider: 'mpesa', phone: '254712345678', sale: SALE }, QUICK);
  assert.equal(p.status, 'cancelled');
  assert.equal(p.status_reason, 'Request cancelled by user');
  assert.equal(p.sale_state, 'not_sealed');
  assert.deepEqual(events, ['pending/waiting', 'cancelled/not_sealed']);
  const [sent] = payments.posts;
  assert.equal(sent.amount, '200.00');
  assert.ok(isUuidv7(sent.sale.client_invoice_id));
  assert.equal(sent.sale.outlet_id, 'o1');
  assert.equal(sent.sale.lines[0].unit_price, '100.00');
  assert.equal(sent.client_invoice_id, undefined);
  assert.equal(t.drafts(['pending', 'sealed', 'rejected']).length, 0, 'a pay-first sale is sealed by the cloud, not queued here');
  await t.close();
});

test('pay-first waits for the sale too: confirmed but not yet sealed is not settled', async () => {
  const payments = new FakePayments();
  payments.script = [{ status: 'confirmed', sale_state: 'retrying' }, { status: 'confirmed', sale_state: 'sealed', invoice_id: 'inv-9' }];
  const t = await terminal(payments);
  const p = await t.pay({ provider: 'mpesa', phone: '254712345678', sale: SALE }, QUICK);
  assert.equal(p.sale_state, 'sealed');
  assert.equal(p.invoice_id, 'inv-9');
  await t.close();
});

test('bad input is refused before any request', async () => {
  const payments = new FakePayments();
  const t = await terminal(payments);
  const d = await t.sell(SALE);
  const cases = [
    { provider: 'paypal', phone: '254712345678', draft: d },
    { provider: 'mpesa', phone: '0712345678', draft: d },
    { provider: 'mpesa', phone: '2547123456789012', draft: d },
    { provider: 'mpesa', phone: '254712345678' },
    { provider: 'mpesa', phone: '254712345678', draft: d, invoiceId: 'x' },
    { provider: 'mpesa', phone: '254712345678', draft: d, amount: '0' },
    { provider: 'mpesa', phone: '254712345678', draft: d, amount: '1.001' },
    { provider: 'mpesa', phone: '254712345678', invoiceId: 'inv-1' },
  ];
  for (const input of cases) await assert.rejects(t.pay(input), ValidationError, JSON.stringify(input));
  assert.equal(payments.posts.length, 0);
  await t.close();
  await assert.rejects(t.pay({ provider: 'mpesa', phone: '254712345678', draft: d }), /closed/);
});
