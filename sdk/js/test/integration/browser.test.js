// The browser build in headless Chromium (Debian's, driven by playwright-core): the queue lives in
// IndexedDB across page reloads, then replays through the real gateway (cross-origin, CORS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { chromium } from 'playwright-core';
import jsQR from 'jsqr';
import { getStack, releaseStack, createMerchant, ledgerInvoices, gaplessProblems } from '../helpers/stack.js';
import { ChaosProxy } from '../helpers/proxy.js';
import { startStaticServer } from '../helpers/static-server.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'];

let stack;
let proxy;
let web;
let browser;
/** The gateway URL the page's SDK uses (another origin than the page's). */
let pageGateway;

before(async () => {
  // No Chromium is a failure of this suite, never a skip.
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  stack = await getStack();
  // page (static server) --> SDK --> chaos proxy --> Envoy: the real cross-origin path, which works only
  // because the gateway answers with CORS headers. There is no same-origin fallback: without CORS this fails.
  const u = new URL(stack.gatewayUrl);
  proxy = await new ChaosProxy({ upstreamHost: u.hostname, upstreamPort: Number(u.port) }).start();
  web = await startStaticServer();
  pageGateway = proxy.url;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
});
after(async () => {
  await browser?.close();
  await web?.stop();
  await proxy?.stop();
  await releaseStack();
});

/**
 * Forwards HTTP to `upstream` with every Access-Control-* header removed from the answers: a gateway
 * without CORS, to show that the browser in this test really enforces it.
 */
async function startCorsStrippingProxy(upstream) {
  const u = new URL(upstream);
  const server = http.createServer((req, res) => {
    const fwd = http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: { ...req.headers, host: u.host } }, (up) => {
      const headers = Object.fromEntries(Object.entries(up.headers).filter(([k]) => !k.startsWith('access-control-')));
      res.writeHead(up.statusCode, headers);
      up.pipe(res);
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((r) => {
      server.closeAllConnections?.();
      server.close(() => r());
    }),
  };
}

test('browser: cross-origin calls work only with CORS; the 58 mm HTML QR decodes to the real URL', async () => {
  const m = await createMerchant(stack, { outlets: 1, terminals: 1 });
  const o = m.outlets[0];
  const noCors = await startCorsStrippingProxy(stack.gatewayUrl);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${web.url}/`);
    await page.waitForFunction(() => window.fiscalReady === true, null, { timeout: 15000 });
    assert.notEqual(new URL(web.url).origin, new URL(pageGateway).origin, 'the page and the gateway are different origins');
    const sale = (gatewayUrl, id) => ({
      gatewayUrl, apiKey: m.pos_keys[o.id],
      body: { outlet_id: o.id, client_invoice_id: id, pos_terminal_id: m.terminals[o.id][0], cashier_id: m.cashiers[o.id][0], currency: o.currency,
        lines: [{ description: 'Mandazi', quantity: '3', unit_price: '10.00', tax_group: 'A' }] },
    });
    // A POST with Authorization and a JSON body needs a CORS preflight, then CORS headers on the answer.
    const seal = (x) => page.evaluate(async ({ gatewayUrl, apiKey, body }) => {
      try {
        const api = new window.fiscal.FiscalApi({ gatewayUrl, apiKey, timeoutMs: 5000 });
        const inv = await api.sealInvoice(body);
        return { ok: true, fn: inv.fiscal.fiscal_number, inv };
      } catch (e) {
        return { ok: false, error: `${e.name}: ${e.message}` };
      }
    }, x);
    const withCors = await seal(sale(pageGateway, 'cors-1'));
    assert.equal(withCors.ok, true, `cross-origin seal through the gateway: ${withCors.error}`);
    const without = await seal(sale(noCors.url, 'cors-2'));
    assert.equal(without.ok, false, 'without CORS headers the browser must refuse the cross-origin call');
    const ledger = await ledgerInvoices(stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
    assert.ok(ledger.some((i) => i.client_invoice_id === 'cors-1' && i.fiscal.fiscal_number === withCors.fn));

    // The 58 mm HTML receipt of that real invoice, as Chromium draws its QR: pixels decode to fiscal.qr_code.
    const shot = await page.evaluate(async (inv) => {
      document.getElementById('receipt').innerHTML = window.fiscal.renderReceiptHtml(inv, { document: false, width: 58 });
      const svg = document.querySelector('#receipt svg');
      const img = new Image();
      img.src = `data:image/svg+xml;base64,${btoa(new XMLSerializer().serializeToString(svg))}`;
      await img.decode();
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const g = canvas.getContext('2d');
      g.drawImage(img, 0, 0);
      const { data } = g.getImageData(0, 0, canvas.width, canvas.height);
      let bin = '';
      for (let i = 0; i < data.length; i += 0x8000) bin += String.fromCharCode(...data.subarray(i, i + 0x8000));
      return { width: canvas.width, height: canvas.height, rgba: btoa(bin) };
    }, withCors.inv);
    const decoded = jsQR(new Uint8ClampedArray(Buffer.from(shot.rgba, 'base64')), shot.width, shot.height);
    assert.equal(decoded?.data, withCors.inv.fiscal.qr_code, '58 mm HTML QR, drawn by Chromium, decodes to the real URL');
    const v = await fetch(decoded.data).then((r) => r.json());
    assert.equal(v.valid, true, v.reason);
  } finally {
    await context.close();
    await noCors.stop();
  }
});

test('browser: drafts survive a page reload in IndexedDB, then seal through the gateway', async () => {
  const m = await createMerchant(stack, { outlets: 1, terminals: 1 });
  const o = m.outlets[0];
  const cfg = {
    gatewayUrl: pageGateway, apiKey: m.pos_keys[o.id], outletId: o.id, posTerminalId: m.terminals[o.id][0], cashierId: m.cashiers[o.id][0],
    currency: o.currency, taxGroups: m.tax_groups, heartbeatIntervalMs: 0, backoff: { initialMs: 100, maxMs: 500 }, requestTimeoutMs: 5000,
  };
  const context = await browser.newContext();
  const page = await context.newPage();
  const logs = [];
  page.on('console', (msg) => logs.push(msg.text()));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(`${web.url}/`);
  await page.waitForFunction(() => window.fiscalReady === true, null, { timeout: 15000 });

  // Offline: five sales become drafts in IndexedDB. The page is then reloaded without closing anything.
  await proxy.setMode('refuse');
  const first = await page.evaluate(async (cfg) => {
    const t = await window.fiscal.openBrowserTerminal(cfg);
    const ids = [];
    for (let i = 0; i < 5; i++) {
      const d = await t.sell({ lines: [{ description: `Chapati ${i}`, quantity: '2', unit_price: '25.50', tax_group: 'A' }, { description: 'Chai', quantity: '1', unit_price: '30', tax_group: 'E' }] }, { wait: 0 });
      ids.push(d.client_invoice_id);
    }
    const slip = window.fiscal.renderReceiptHtml(t.getDraft(ids[0]), { document: false, width: 58 });
    document.getElementById('receipt').innerHTML = slip;
    return { ids, pending: t.status.draftCount, state: t.status.state, total: t.getDraft(ids[0]).provisional.total };
  }, cfg);
  assert.equal(first.pending, 5);
  assert.equal(first.total, '81.00');
  assert.match(await page.textContent('#receipt'), /NOT A FISCAL RECEIPT/);

  // Reload the page with the gateway still unreachable: the queue must come from IndexedDB.
  await page.reload();
  await page.waitForFunction(() => window.fiscalReady === true, null, { timeout: 15000 });
  const reloaded = await page.evaluate(async (cfg) => {
    const t = await window.fiscal.openBrowserTerminal({ ...cfg, autoStart: false });
    window.t = t;
    // A second opener (another tab) is refused while this one holds the queue.
    const second = await window.fiscal.openBrowserTerminal(cfg).then(() => 'opened', (e) => e.message);
    return { drafts: t.drafts().map((d) => [d.client_invoice_id, d.state]), second };
  }, cfg);
  assert.deepEqual(reloaded.drafts, first.ids.map((id) => [id, 'pending']), 'the queue came back from IndexedDB, in order');
  assert.match(reloaded.second, /already open/);

  // Back online: the queue replays.
  await proxy.setMode('pass');
  const sealed = await page.evaluate(async () => {
    const t = window.t;
    t.start();
    const ok = await t.drain(30000);
    const ds = t.drafts(['sealed']);
    if (ds.length === 0) return { ok, status: t.status, sealed: [] };
    const html = window.fiscal.renderReceiptHtml(ds[0], { document: false, width: 80 });
    document.getElementById('receipt').innerHTML = html;
    return { ok, status: t.status, sealed: ds.map((d) => ({ id: d.client_invoice_id, fn: d.invoice.fiscal.fiscal_number, ac: d.invoice.fiscal.auth_code })), text: window.fiscal.renderReceiptText(ds[0], { width: 80 }) };
  });
  assert.equal(sealed.ok, true, `drain failed: ${JSON.stringify(sealed.status)} ${logs.join('\n')}`);
  assert.equal(sealed.status.state, 'online');
  assert.deepEqual(sealed.sealed.map((s) => s.id), first.ids);
  assert.ok(sealed.text.includes(sealed.sealed[0].fn));
  const receiptText = await page.textContent('#receipt');
  assert.ok(receiptText.includes(sealed.sealed[0].ac));
  assert.ok((await page.$('#receipt svg')) !== null, 'QR drawn as SVG');

  const ledger = await ledgerInvoices(stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
  assert.equal(ledger.length, 5);
  assert.deepEqual(gaplessProblems(ledger, o.code), []);
  assert.deepEqual(ledger.sort((a, b) => Number(a.fiscal.counter) - Number(b.fiscal.counter)).map((i) => i.client_invoice_id), first.ids);

  // After another reload: nothing pending, the sealed receipts are still there for reprints.
  await page.reload();
  await page.waitForFunction(() => window.fiscalReady === true, null, { timeout: 15000 });
  const again = await page.evaluate(async (cfg) => {
    const t = await window.fiscal.openBrowserTerminal({ ...cfg, autoStart: false });
    const r = { pending: t.status.draftCount, sealed: t.drafts(['sealed']).length };
    await t.close();
    return r;
  }, cfg);
  assert.deepEqual(again, { pending: 0, sealed: 5 });
  await context.close();
});
