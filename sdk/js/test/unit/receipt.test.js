import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PosTerminal, renderReceiptText, renderReceiptEscPos, renderReceiptHtml, NOT_FISCAL, formatLocal, extractRasterImages } from '../../dist/index.js';
import { FakeGateway, TAX_GROUPS } from '../helpers/fake-gateway.js';
import { decodeTextReceiptQr, decodeEscPosQr } from '../helpers/qr-decode.js';

let gw;
let sealed;
let draft;
const header = { merchantName: 'Mama Mboga Ltd', outletName: 'Nairobi CBD', address: ['Moi Avenue 12', 'Nairobi'], taxpayerId: 'P000111222', footer: 'Asante sana!' };

before(async () => {
  gw = await new FakeGateway().start();
  const t = await PosTerminal.open({ gatewayUrl: gw.url, apiKey: 'pos-key-o1', outletId: 'o1', posTerminalId: 'till-1', cashierId: 'amina', currency: 'KES', taxGroups: TAX_GROUPS, heartbeatIntervalMs: 0 });
  sealed = await t.sell({ lines: [
    { description: 'Sukari (sugar) 2kg', quantity: '1', unit_price: '310', tax_group: 'A' },
    { description: 'Maziwa (milk) 500ml, long life, imported from Uganda', quantity: '3', unit_price: '65.50', tax_group: 'C' },
  ], payments: [{ method: 'mpesa', amount: '506.50', reference: 'QJK2X1' }], buyer: { name: 'Jane Wanjiru', tax_id: 'A012345678Z' } });
  await t.close();
  const t2 = await PosTerminal.open({ gatewayUrl: 'http://127.0.0.1:9', apiKey: 'k', outletId: 'o1', posTerminalId: 'till-2', cashierId: 'amina', currency: 'KES', taxGroups: TAX_GROUPS, heartbeatIntervalMs: 0, requestTimeoutMs: 500 });
  draft = await t2.sell({ lines: [{ description: 'Soda', quantity: '2', unit_price: '100', tax_group: 'A' }] }, { wait: 2000 });
  await t2.close();
});
after(async () => gw.stop());

function fiveElements(text, inv) {
  const f = inv.fiscal;
  assert.ok(text.includes(f.fiscal_number), 'fiscal number');
  assert.ok(text.includes(f.fiscal_authority_id), 'fiscal authority id');
  assert.ok(text.includes(f.auth_code), 'auth code');
  assert.ok(text.includes(f.sealed_at), 'seal timestamp (UTC)');
}

for (const width of [58, 80]) {
  test(`text receipt ${width} mm: five elements, fits the paper, QR decodes to the verification URL`, () => {
    const text = renderReceiptText(sealed, { width, header });
    fiveElements(text, sealed.invoice);
    const cols = width === 58 ? 32 : 48;
    for (const l of text.split('\n')) assert.ok([...l].length <= cols, `line too wide for ${width} mm: "${l}"`);
    assert.equal(decodeTextReceiptQr(text), sealed.invoice.fiscal.qr_code);
    assert.ok(text.includes('FISCAL INVOICE'));
    assert.ok(text.includes('506.50'));
    assert.ok(!text.includes(NOT_FISCAL));
  });

  test(`ESC/POS ${width} mm: init, cut, five elements, raster QR decodes`, () => {
    const bytes = renderReceiptEscPos(sealed, { width, header });
    assert.deepEqual([...bytes.slice(0, 2)], [0x1b, 0x40]);
    assert.deepEqual([...bytes.slice(-4)], [0x1d, 0x56, 0x42, 0x00]);
    const text = Buffer.from(bytes).toString('latin1');
    fiveElements(text, sealed.invoice);
    assert.equal(decodeEscPosQr(bytes), sealed.invoice.fiscal.qr_code);
    const dots = width === 58 ? 384 : 576;
    const [img] = extractRasterImages(bytes);
    assert.ok(img.widthDots <= dots, `QR ${img.widthDots} dots fits the printable width ${dots}`);
  });
}

test('ESC/POS native QR mode uses GS ( k with the URL', () => {
  const bytes = renderReceiptEscPos(sealed, { width: 80, qr: 'native' });
  const s = Buffer.from(bytes).toString('latin1');
  assert.ok(s.includes('\x1d(k'));
  assert.ok(s.includes(sealed.invoice.fiscal.qr_code));
});

test('HTML receipt: five elements, SVG QR, escaped text', () => {
  const html = renderReceiptHtml({ ...sealed.invoice, lines: [...sealed.invoice.lines, { description: '<script>x</script>', quantity: '1', unit_price: '0.00', tax_group: 'A', line_total: '0.00' }] }, { width: 58, header });
  fiveElements(html, sealed.invoice);
  assert.ok(html.startsWith('<!DOCTYPE html>'));
  assert.ok(html.includes('<svg'));
  assert.ok(html.includes('data-fiscal="true"'));
  assert.ok(!html.includes('<script>x'));
  assert.ok(html.includes('&lt;script&gt;'));
  const frag = renderReceiptHtml(sealed, { document: false });
  assert.ok(frag.startsWith('<style>'));
});

test('a draft prints as a provisional slip, clearly not fiscal, with no security elements', () => {
  assert.equal(draft.state, 'pending');
  for (const width of [58, 80]) {
    const text = renderReceiptText(draft, { width, header });
    assert.ok(text.includes(NOT_FISCAL));
    assert.ok(text.includes('PROVISIONAL'));
    assert.ok(text.includes(draft.client_invoice_id.slice(0, 20)));
    assert.ok(text.includes('200.00'));
    assert.ok(!/Auth code|Fiscal authority|Sealed/.test(text));
    assert.equal(decodeTextReceiptQr(text), undefined, 'no QR on a provisional slip');
    const cols = width === 58 ? 32 : 48;
    for (const l of text.split('\n')) assert.ok([...l].length <= cols, l);
  }
  const html = renderReceiptHtml(draft);
  assert.ok(html.includes(NOT_FISCAL));
  assert.ok(html.includes('data-fiscal="false"'));
  assert.ok(!html.includes('<svg'));
  const esc = Buffer.from(renderReceiptEscPos(draft)).toString('latin1');
  assert.ok(esc.includes(NOT_FISCAL));
});

test('local time formatting with offsets', () => {
  assert.equal(formatLocal('2025-11-23T11:05:12Z', 'Africa/Nairobi'), '2025-11-23 14:05:12 +03:00');
  assert.equal(formatLocal('2025-11-23T11:05:12Z', 'Africa/Kinshasa'), '2025-11-23 12:05:12 +01:00');
  assert.equal(formatLocal('2025-11-23T11:05:12.5Z', 'UTC'), '2025-11-23 11:05:12 +00:00');
});
