// The SDK's offline (provisional) totals against the REAL server, across currencies with 0, 2 and 3 minor
// units and tax rates 16 %, 7.5 %, 0 % and exempt: every sale is sealed through Envoy and the ledger, and
// the totals the SDK computes locally (computeTotals, the provisional slip) must equal the server's
// line totals, tax_totals, total_taxable, total_tax and total exactly. Then the 58 mm receipt of a real
// invoice: its printed QR, decoded from pixels, is the invoice's fiscal.qr_code, and that URL verifies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosTerminal, computeTotals, minorUnits, qrMatrix, renderReceiptEscPos, renderReceiptText, extractRasterImages } from '../../dist/node.js';
import { getStack, releaseStack, createMerchant, addTaxGroups } from '../helpers/stack.js';
import { decodeEscPosQr, decodeTextReceiptQr } from '../helpers/qr-decode.js';

/** Currencies by minor units: UGX and XOF 0, KES 2, TND 3. */
const CURRENCIES = ['UGX', 'XOF', 'KES', 'TND'];
/** Groups the CLI does not create (it makes A 16 %, B 8 %, C 0 %, E exempt). */
const EXTRA_GROUPS = [{ code: 'V', label: 'VAT 7.5%', rate: '7.5' }];
/** The groups the sales use: standard 16 %, 7.5 %, zero-rated and exempt. */
const USED = ['A', 'V', 'C', 'E'];

let stack;
const tills = new Map(); // currency -> { m, t }
const sealed = new Map(); // currency -> sealed drafts

/** An amount of `minor` minor units as the currency writes it ("1.005" in TND, "12" in UGX). */
function money(minor, currency) {
  const d = minorUnits(currency);
  const s = String(minor).padStart(d + 1, '0');
  return d === 0 ? s : `${s.slice(0, -d)}.${s.slice(-d)}`;
}

/**
 * Sales chosen to exercise the rounding: half-way line totals (x.5 of a minor unit, where half-up and
 * half-even differ), many lines per group (so rounding the tax per group differs from per line), decimal
 * quantities, and a seeded random mix.
 */
function salesFor(currency) {
  const line = (description, quantity, minor, tax_group) => ({ description, quantity, unit_price: money(minor, currency), tax_group });
  const sales = [
    // 0.5 and 2.5 minor units: half-up gives 1 and 3 (half-even would give 0 and 2).
    { lines: [line('half a unit', '0.5', 1, 'A'), line('two and a half', '2.5', 1, 'V'), line('bulk', '1', 1000, 'A')] },
    // 0.125 x 20 = 2.5 and 0.001 x 500 = 0.5 minor units, in the 7.5 % and zero-rated groups.
    { lines: [line('spice 125 g', '0.125', 20, 'V'), line('thread 1 mm', '0.001', 500, 'C'), line('rice', '3', 3333, 'V')] },
    // Seven lines of 3 minor units at 16 %: the tax of each line rounds to 0, the group's (21 x 16/116) to 3.
    { lines: Array.from({ length: 7 }, (_, i) => line(`sweet ${i}`, '1', 3, 'A')).concat([line('water', '1', 7, 'E')]) },
    // Every group at once, awkward prices and three-decimal quantities.
    { lines: [line('sugar', '2.333', 999, 'A'), line('flour', '1.755', 1499, 'V'), line('milk', '0.333', 6555, 'C'), line('book', '12.75', 123457, 'E')] },
    // A large sale (but well inside the documented limits).
    { lines: [line('cement', '250', 1250075, 'A'), line('nails', '37.5', 31999, 'V'), line('school fees', '1', 45000000, 'E')] },
  ];
  let seed = currency.split('').reduce((a, c) => a * 31 + c.charCodeAt(0), 7);
  const rnd = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let i = 0; i < 12; i++) {
    const lines = [];
    for (let j = 0; j < 1 + rnd(6); j++) {
      const quantity = rnd(2) === 0 ? String(1 + rnd(9)) : `${rnd(20)}.${String(1 + rnd(999)).padStart(3, '0')}`;
      lines.push(line(`item ${i}.${j}`, quantity, 1 + rnd(250000), USED[rnd(USED.length)]));
    }
    sales.push({ lines });
  }
  return sales;
}

const moneyOf = (t) => ({
  lines: t.lines.map((l) => [l.tax_group, l.quantity, l.unit_price, l.line_total]),
  tax_totals: t.tax_totals.map((g) => [g.tax_group, g.rate, g.gross_amount, g.tax_amount, g.taxable_amount]),
  total_taxable: t.total_taxable,
  total_tax: t.total_tax,
  total: t.total,
});

before(async () => {
  stack = await getStack();
  for (const currency of CURRENCIES) {
    const m = await addTaxGroups(stack, await createMerchant(stack, { outlets: 1, terminals: 1, cashiers: 1, currency, name: `Totals ${currency}` }), EXTRA_GROUPS);
    const outlet = m.outlets[0];
    assert.equal(outlet.currency, currency);
    const t = await PosTerminal.open({
      gatewayUrl: stack.gatewayUrl, apiKey: m.pos_keys[outlet.id], outletId: outlet.id, posTerminalId: m.terminals[outlet.id][0],
      cashierId: m.cashiers[outlet.id][0], currency, taxGroups: m.tax_groups, heartbeatIntervalMs: 0, sealWaitMs: 20000,
    });
    tills.set(currency, { m, t });
  }
});
after(async () => {
  for (const { t } of tills.values()) await t.close();
  await releaseStack();
});

for (const currency of CURRENCIES) {
  test(`${currency} (${minorUnits(currency)} minor units): the SDK's offline totals equal the real server's, to the minor unit`, async () => {
    const { m, t } = tills.get(currency);
    const drafts = [];
    for (const sale of salesFor(currency)) {
      const d = await t.sell(sale);
      assert.equal(d.state, 'sealed', `${currency}: ${d.last_error ?? d.reject_reason}`);
      drafts.push(d);
      const server = d.invoice;
      assert.equal(server.currency, currency);
      // Computed here from the request alone, as a terminal does offline; and what the slip showed before the seal.
      const local = computeTotals(d.request.lines, currency, m.tax_groups);
      assert.deepEqual(moneyOf(d.provisional), moneyOf(local));
      assert.deepEqual(moneyOf(server), moneyOf(local), `${currency} sale ${server.fiscal.fiscal_number}: server vs SDK`);
    }
    sealed.set(currency, drafts);
    // The sales did exercise what they are meant to (otherwise equality above would prove less).
    const groupsSeen = new Set(drafts.flatMap((d) => d.invoice.tax_totals.map((g) => g.rate)));
    assert.deepEqual([...groupsSeen].sort(), ['', '0', '16', '7.5']);
    const ties = drafts.flatMap((d) => d.invoice.lines).filter((l) => halfwayLine(l, currency));
    assert.ok(ties.length >= 3, `${currency}: half-way line totals sealed: ${ties.length}`);
    const perLineDiffers = drafts.some((d) => d.invoice.tax_totals.some((g) => perLineTax(d.invoice.lines, g, currency) !== toMinorInt(g.tax_amount, currency)));
    assert.ok(perLineDiffers, `${currency}: some sale's tax rounded per line would differ from per group`);
  });
}

/** quantity x unit_price lies exactly half-way between two minor units. */
function halfwayLine(l, currency) {
  const [qi, qf = ''] = l.quantity.split('.');
  const q = BigInt(qi + qf.padEnd(3, '0'));
  return (q * toMinorInt(l.unit_price, currency)) % 1000n === 500n;
}

function toMinorInt(amount, currency) {
  const [i, f = ''] = amount.split('.');
  return BigInt(i + f.padEnd(minorUnits(currency), '0'));
}

/** The group's tax if each line's tax were rounded on its own (the wrong rule), in minor units. */
function perLineTax(lines, group, currency) {
  if (group.rate === '' || Number(group.rate) === 0) return 0n;
  const [ri, rf = ''] = group.rate.split('.');
  const r = BigInt(ri + rf);
  const hundred = 100n * 10n ** BigInt(rf.length);
  let sum = 0n;
  for (const l of lines.filter((x) => x.tax_group === group.tax_group)) sum += (2n * toMinorInt(l.line_total, currency) * r + hundred + r) / (2n * (hundred + r));
  return sum;
}

test('58 mm receipts of real invoices: the printed QR decodes to the real fiscal.qr_code, which verifies', async () => {
  for (const currency of CURRENCIES) {
    const drafts = sealed.get(currency);
    assert.ok(drafts?.length, `${currency}: no sealed invoices (the totals test failed)`);
    const d = drafts[drafts.length - 1];
    const f = d.invoice.fiscal;
    assert.ok(f.qr_code.startsWith(`${stack.gatewayUrl}/v1/verify?`), `the QR points at this gateway: ${f.qr_code}`);

    // ESC/POS for a 58 mm printer: a raster image no wider than the 384-dot head, decoded from its pixels.
    const bytes = renderReceiptEscPos(d, { width: 58 });
    const images = extractRasterImages(bytes);
    assert.equal(images.length, 1, 'one QR image on the receipt');
    assert.ok(images[0].widthDots <= 384, `QR is ${images[0].widthDots} dots wide`);
    assert.equal(decodeEscPosQr(bytes), f.qr_code, `${currency}: 58 mm ESC/POS QR`);

    // Plain text on 32 columns: the QR in quadrant blocks when it fits (ECC L, 1-module quiet zone),
    // otherwise the URL itself, whole, and no half-drawn QR.
    const text = renderReceiptText(d, { width: 58 });
    const fits = qrMatrix(f.qr_code, 'L').size + 2 <= 64;
    if (fits) assert.equal(decodeTextReceiptQr(text), f.qr_code, `${currency}: 58 mm text QR`);
    else {
      assert.equal(decodeTextReceiptQr(text), undefined);
      assert.ok(text.split('\n').join('').includes(f.qr_code), `${currency}: 58 mm text prints the verification URL`);
    }

    // The decoded URL, fetched as a phone would after scanning it, verifies through the real gateway.
    const r = await fetch(decodeEscPosQr(bytes));
    const v = await r.json();
    assert.equal(r.status, 200, JSON.stringify(v));
    assert.equal(v.valid, true, v.reason);
    assert.equal(v.registered, true);
    assert.equal(v.fiscal_number, f.fiscal_number);
    assert.equal(v.total, d.invoice.total);
    // A tampered total in that URL does not.
    const bad = await fetch(f.qr_code.replace(/([?&]tt=)[^&]+/, `$1${money(1, currency)}`)).then((x) => x.json());
    assert.equal(bad.valid, false);
  }
});
