// Seals through the real Envoy and mesh; receipts carry the five security elements; the QR verifies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosTerminal, FiscalApi, ApiError, renderReceiptText, renderReceiptEscPos, renderReceiptHtml, qrMatrix, NOT_FISCAL } from '../../dist/node.js';
import { getStack, releaseStack, createMerchant, ledgerInvoices } from '../helpers/stack.js';
import { decodeTextReceiptQr, decodeEscPosQr } from '../helpers/qr-decode.js';

let stack;
let m;
let outlet;
let t;

before(async () => {
  stack = await getStack();
  m = await createMerchant(stack, { outlets: 1, terminals: 2, cashiers: 2 });
  outlet = m.outlets[0];
  t = await PosTerminal.open({
    gatewayUrl: stack.gatewayUrl, apiKey: m.pos_keys[outlet.id], outletId: outlet.id, posTerminalId: m.terminals[outlet.id][0],
    cashierId: m.cashiers[outlet.id][0], currency: outlet.currency, taxGroups: m.tax_groups, heartbeatIntervalMs: 0, sealWaitMs: 20000,
  });
});
after(async () => {
  await t?.close();
  await releaseStack();
});

const header = { merchantName: 'Duka QA', outletName: 'Outlet 1', address: 'Moi Avenue 12, Nairobi', footer: 'Asante!' };

test('seal through the gateway: five elements on every receipt, the QR verifies', async () => {
  const d = await t.sell({
    lines: [
      { description: 'Sukari 2kg', quantity: '1', unit_price: '310', tax_group: 'A' },
      { description: 'Unga 1kg', quantity: '2', unit_price: '149.99', tax_group: 'B' },
      { description: 'Maziwa', quantity: '0.333', unit_price: '65.55', tax_group: 'E' },
    ],
    payments: [{ method: 'cash', amount: '700' }],
  });
  assert.equal(d.state, 'sealed', d.last_error);
  const inv = d.invoice;
  const f = inv.fiscal;
  assert.equal(inv.client_invoice_id, d.client_invoice_id);
  assert.equal(inv.pos_terminal_id, t.posTerminalId);
  assert.equal(inv.cashier_id, t.cashierId);
  assert.equal(inv.total, d.provisional.total, 'the provisional total is the server total');
  assert.deepEqual(inv.tax_totals.map((x) => [x.tax_group, x.gross_amount, x.tax_amount, x.taxable_amount]),
    d.provisional.tax_totals.map((x) => [x.tax_group, x.gross_amount, x.tax_amount, x.taxable_amount]));
  const api = new FiscalApi({ gatewayUrl: stack.gatewayUrl });
  for (const width of [58, 80]) {
    const text = renderReceiptText(d, { width, header });
    for (const el of [f.fiscal_number, f.fiscal_authority_id, f.auth_code, f.sealed_at]) assert.ok(text.includes(el), `${width} mm text lacks ${el}`);
    const cols = width === 58 ? 32 : 48;
    for (const l of text.split('\n')) assert.ok([...l].length <= cols, `too wide: ${l}`);
    const qrFromText = decodeTextReceiptQr(text);
    // 32 columns hold a QR of at most 62 modules (ECC L, 1-module quiet zone); a longer URL is printed instead.
    if (width === 80 || qrMatrix(f.qr_code, 'L').size + 2 <= 2 * cols) assert.equal(qrFromText, f.qr_code, `the ${width} mm text QR decodes to the verification URL`);
    else {
      assert.equal(qrFromText, undefined, 'no half-drawn QR');
      assert.ok(text.replace(/\n/g, '').includes(f.qr_code), '58 mm text prints the verification URL when the QR does not fit 32 columns');
    }
    const bytes = renderReceiptEscPos(d, { width, header });
    const qr = decodeEscPosQr(bytes);
    assert.equal(qr, f.qr_code, `${width} mm ESC/POS QR decodes`);
    const esc = Buffer.from(bytes).toString('latin1');
    for (const el of [f.fiscal_number, f.fiscal_authority_id, f.auth_code, f.sealed_at]) assert.ok(esc.includes(el));
    const html = renderReceiptHtml(d, { width, header });
    for (const el of [f.fiscal_number, f.fiscal_authority_id, f.auth_code, f.sealed_at]) assert.ok(html.includes(el));
    assert.ok(html.includes('<svg'));
  }
  const decoded = decodeTextReceiptQr(renderReceiptText(d, { width: 80 }));
  const v = await api.verify(decoded);
  assert.equal(v.valid, true, v.reason);
  assert.equal(v.registered, true);
  assert.equal(v.fiscal_number, f.fiscal_number);
  assert.equal(v.total, inv.total);
  // A tampered total does not verify.
  const bad = await api.verify(decoded.replace(/tt=[^&]+/, 'tt=1.00'));
  assert.equal(bad.valid, false);
});

// The SDK's totals against the server's, across currencies and rates: totals.test.js.

test('idempotency through the SDK client: same body same invoice, different body 409 conflict', async () => {
  const d = await t.sell({ lines: [{ description: 'Soda', quantity: '1', unit_price: '60', tax_group: 'A' }] });
  assert.equal(d.state, 'sealed');
  const again = await t.api.sealInvoice(d.request);
  assert.equal(again.id, d.invoice.id);
  assert.equal(again.fiscal.fiscal_number, d.invoice.fiscal.fiscal_number);
  assert.equal(again.fiscal.signature, d.invoice.fiscal.signature);
  const err = await t.api.sealInvoice({ ...d.request, lines: [{ ...d.request.lines[0], quantity: '2' }] }).catch((e) => e);
  assert.ok(err instanceof ApiError, String(err));
  assert.equal(err.status, 409);
  assert.equal(err.action, 'conflict');
});

test('credit note, get, list, heartbeat and terminal registry', async () => {
  const d = await t.sell({ lines: [{ description: 'Mafuta 1L', quantity: '2', unit_price: '250', tax_group: 'A' }] });
  const cn = await t.refund(d.invoice, { reason: 'one bottle leaked', lines: [{ description: 'Mafuta 1L', quantity: '1', unit_price: '250', tax_group: 'A' }] });
  assert.equal(cn.state, 'sealed', cn.last_error);
  assert.equal(cn.invoice.kind, 'credit_note');
  assert.equal(cn.invoice.original_invoice_id, d.invoice.id);
  assert.equal(cn.invoice.total, cn.provisional.total);
  const text = renderReceiptText(cn, { width: 80 });
  assert.ok(text.includes('CREDIT NOTE'));
  assert.ok(text.includes(cn.invoice.fiscal.auth_code));
  const got = await t.getInvoice(d.invoice.id);
  assert.equal(got.fiscal.fiscal_number, d.invoice.fiscal.fiscal_number);
  const page = await t.listInvoices({ page_size: 5 });
  assert.ok(page.invoices.some((i) => i.id === cn.invoice.id), 'the newest credit note is on the first page');
  assert.ok(page.invoices.every((i) => i.pos_terminal_id === t.posTerminalId));
  await t.heartbeat();
  assert.equal(t.status.reachable, true, t.status.lastError);
  const terms = await t.api.listTerminals(outlet.id);
  const me = terms.find((x) => x.pos_terminal_id === t.posTerminalId);
  assert.ok(me, 'terminal listed');
  assert.equal(me.sdk_version, t.status.sdkVersion);
  assert.equal(Number(me.draft_count ?? 0), 0);
  // A draft slip before sealing is clearly provisional.
  const slip = renderReceiptText({ ...d, state: 'pending', invoice: undefined }, { width: 58 });
  assert.ok(slip.includes(NOT_FISCAL));
  const all = await ledgerInvoices(stack.gatewayUrl, m.admin_key, { outlet_id: outlet.id });
  assert.ok(all.some((i) => i.id === cn.invoice.id));
});
