// The browser build in headless Chromium (Debian's, driven by playwright-core): the queue lives in
// IndexedDB across page reloads, then replays through the real gateway (cross-origin, CORS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { getStack, releaseStack, createMerchant, ledgerInvoices, gaplessProblems } from '../helpers/stack.js';
import { ChaosProxy } from '../helpers/proxy.js';
import { startStaticServer } from '../helpers/static-server.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'];

let stack;
let proxy;
let web;
let browser;
/** The gateway URL the page's SDK uses. */
let pageGateway;
let crossOrigin;

/** Does the gateway answer a cross-origin REST call with Access-Control-Allow-Origin? */
async function gatewayCorsWorks(gatewayUrl) {
  const r = await fetch(`${gatewayUrl}/v1/keys`, { headers: { Origin: 'http://127.0.0.1:1' } });
  await r.text();
  return r.headers.has('access-control-allow-origin');
}

before(async () => {
  stack = await getStack();
  crossOrigin = process.env.FISCAL_BROWSER_SAME_ORIGIN !== '1' && (await gatewayCorsWorks(stack.gatewayUrl));
  if (crossOrigin) {
    // page (static server) --> SDK --> chaos proxy --> Envoy: the real cross-origin path with CORS.
    const u = new URL(stack.gatewayUrl);
    proxy = await new ChaosProxy({ upstreamHost: u.hostname, upstreamPort: Number(u.port) }).start();
    web = await startStaticServer();
    pageGateway = proxy.url;
  } else {
    // The gateway does not send Access-Control-Allow-Origin on REST answers: serve the page from the
    // gateway's side instead. Browser --> chaos proxy --> static server (page + /v1 forwarded to Envoy).
    process.stderr.write('# browser: the gateway answers REST calls without Access-Control-Allow-Origin; testing from the same origin\n');
    web = await startStaticServer({ upstream: stack.gatewayUrl });
    const u = new URL(web.url);
    proxy = await new ChaosProxy({ upstreamHost: u.hostname, upstreamPort: Number(u.port) }).start();
    pageGateway = proxy.url;
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
});
after(async () => {
  await browser?.close();
  await web?.stop();
  await proxy?.stop();
  await releaseStack();
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
  const pageUrl = `${crossOrigin ? web.url : proxy.url}/`;
  await page.goto(pageUrl);
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

  // Same origin: the page itself comes through the proxy, so reload it with the network back but the
  // terminal not started; the queue must come from IndexedDB either way.
  if (!crossOrigin) await proxy.setMode('pass');
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
