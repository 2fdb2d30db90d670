// A small in-process fake of the gateway's REST contract, for unit tests of the client logic only
// (the acceptance tests run against the real stack). Idempotency, gapless per-outlet numbering,
// error bodies in the gateway's shape, heartbeats, and fault injection.
import http from 'node:http';
import crypto from 'node:crypto';
import { computeTotals } from '../../dist/index.js';

export const TAX_GROUPS = [
  { code: 'A', label: 'VAT 16%', rate: '16' },
  { code: 'B', label: 'Zero', rate: '0' },
  { code: 'C', label: 'Exempt', rate: '' },
];

export class FakeGateway {
  constructor({ keys = { 'pos-key-o1': 'o1', 'pos-key-o2': 'o2' }, latencyMs = 0 } = {}) {
    this.keys = keys;
    this.latencyMs = latencyMs;
    this.invoices = []; // in seal order
    this.byClient = new Map();
    this.counters = new Map();
    this.heartbeats = [];
    this.requests = 0;
    this.sealCalls = 0;
    /** Queue of injected failures for POST /v1/invoices: {status, code, message, retryAfter, commit} */
    this.faults = [];
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start() {
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  async stop() {
    this.server.closeAllConnections?.();
    await new Promise((r) => this.server.close(() => r()));
  }

  send(res, status, body, headers = {}) {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  error(res, status, code, message, headers) {
    this.send(res, status, { code, message, details: [] }, headers);
  }

  async handle(req, res) {
    this.requests++;
    let raw = '';
    for await (const c of req) raw += c;
    if (this.latencyMs) await new Promise((r) => setTimeout(r, this.latencyMs));
    const url = new URL(req.url, 'http://x');
    const auth = req.headers.authorization ?? '';
    const outlet = this.keys[auth.replace(/^Bearer /, '')];
    const p = url.pathname;
    try {
      if (p === '/healthz') return this.send(res, 200, { ok: true });
      if (p === '/v1/verify') {
        const inv = this.invoices.find((i) => i.fiscal.fiscal_number === url.searchParams.get('fn'));
        return this.send(res, 200, { valid: !!inv && inv.fiscal.signature === url.searchParams.get('sg'), registered: !!inv, fiscal_number: url.searchParams.get('fn') });
      }
      if (!outlet) return this.error(res, 401, 16, 'missing or unknown API key');
      const body = raw ? JSON.parse(raw) : {};
      let m;
      if (req.method === 'POST' && p === '/v1/invoices') return this.seal(res, outlet, body, raw);
      if (req.method === 'POST' && (m = /^\/v1\/invoices\/([^/]+)\/credit-notes$/.exec(p))) return this.creditNote(res, outlet, decodeURIComponent(m[1]), body, raw);
      if (req.method === 'GET' && (m = /^\/v1\/invoices\/([^/]+)$/.exec(p))) {
        const inv = this.invoices.find((i) => i.id === decodeURIComponent(m[1]) && i.outlet_id === outlet);
        return inv ? this.send(res, 200, inv) : this.error(res, 404, 5, 'invoice not found');
      }
      if (req.method === 'GET' && p === '/v1/invoices') {
        let list = this.invoices.filter((i) => i.outlet_id === outlet);
        for (const k of ['pos_terminal_id', 'cashier_id']) if (url.searchParams.get(k)) list = list.filter((i) => i[k] === url.searchParams.get(k));
        const size = Number(url.searchParams.get('page_size') || 50);
        const start = Number(url.searchParams.get('page_token') || 0);
        const page = list.slice(start, start + size);
        return this.send(res, 200, { invoices: page, next_page_token: start + size < list.length ? String(start + size) : '' });
      }
      if (req.method === 'POST' && (m = /^\/v1\/terminals\/([^/]+)\/heartbeat$/.exec(p))) {
        this.heartbeats.push({ terminal: decodeURIComponent(m[1]), ...body });
        return this.send(res, 200, { server_time: new Date().toISOString(), offline_grace_seconds: '259200' });
      }
      return this.error(res, 404, 5, 'no route');
    } catch (e) {
      return this.error(res, 400, 3, `bad request: ${e.message}`);
    }
  }

  nextNumber(outlet, series) {
    const k = `${outlet}/${series}`;
    const n = (this.counters.get(k) ?? 0) + 1;
    this.counters.set(k, n);
    return n;
  }

  fiscal(outlet, series, n, total, currency) {
    const fn = `${outlet.toUpperCase()}-${series}-${String(n).padStart(10, '0')}`;
    const sealedAt = new Date().toISOString();
    const sg = crypto.randomBytes(64).toString('base64url');
    const ac = sg.slice(0, 8).toUpperCase();
    const qs = new URLSearchParams({ v: '1', fn, fa: 'FA-TEST-01', ts: sealedAt, tt: total, cur: currency, d: crypto.randomBytes(32).toString('base64url'), ac, kid: 'k1', sg });
    return {
      fiscal_number: fn, outlet_code: outlet.toUpperCase(), series, counter: String(n), fiscal_authority_id: 'FA-TEST-01', auth_code: ac,
      sealed_at: sealedAt, sealed_at_local: sealedAt.replace('Z', '+00:00'), qr_code: `https://verify.example.test/v1/verify?${qs}`,
      signature: sg, key_id: 'k1', taxpayer_id: 'P000111222', time_zone: 'Africa/Nairobi',
    };
  }

  checkFault(res, key) {
    const f = this.faults[0];
    if (!f) return false;
    if (f.commit) return false; // handled after the commit
    this.faults.shift();
    if (f.status === 'destroy') {
      res.socket.destroy();
      return true;
    }
    this.error(res, f.status, f.code ?? 14, f.message ?? 'injected', f.retryAfter ? { 'retry-after': String(f.retryAfter) } : {});
    void key;
    return true;
  }

  seal(res, outlet, body, raw) {
    this.sealCalls++;
    if (this.checkFault(res)) return;
    if (body.outlet_id !== outlet) return this.error(res, 403, 7, 'key not valid for this outlet');
    if (!body.client_invoice_id) return this.error(res, 400, 3, 'client_invoice_id is required');
    if (!Array.isArray(body.lines) || body.lines.length === 0) return this.error(res, 400, 3, 'lines are required');
    for (const l of body.lines) if (!TAX_GROUPS.some((g) => g.code === l.tax_group)) return this.error(res, 400, 3, `unknown tax group ${l.tax_group}`);
    const key = `${outlet}/${body.client_invoice_id}`;
    const canon = JSON.stringify(body);
    const prev = this.byClient.get(key);
    if (prev) {
      if (prev.canon !== canon) return this.error(res, 409, 6, 'client_invoice_id already used with a different body');
      return this.answer(res, prev.invoice);
    }
    const t = computeTotals(body.lines, body.currency, TAX_GROUPS);
    const n = this.nextNumber(outlet, 'A');
    const inv = {
      id: crypto.randomUUID(), outlet_id: outlet, client_invoice_id: body.client_invoice_id, pos_terminal_id: body.pos_terminal_id,
      cashier_id: body.cashier_id, kind: 'invoice', status: 'sealed', currency: body.currency, lines: t.lines, tax_totals: t.tax_totals,
      total_taxable: t.total_taxable, total_tax: t.total_tax, total: t.total, payments: body.payments ?? [], sold_at: body.sold_at,
      fiscal: this.fiscal(outlet, 'A', n, t.total, body.currency),
    };
    this.invoices.push(inv);
    this.byClient.set(key, { canon, invoice: inv });
    this.answer(res, inv);
  }

  answer(res, inv) {
    const f = this.faults[0];
    if (f && f.commit) {
      this.faults.shift();
      // Committed, but the answer never arrives.
      res.socket.destroy();
      return;
    }
    this.send(res, 200, inv);
  }

  creditNote(res, outlet, id, body) {
    if (this.checkFault(res)) return;
    const orig = this.invoices.find((i) => i.id === id && i.outlet_id === outlet);
    if (!orig) return this.error(res, 404, 5, 'original invoice not found');
    const key = `${outlet}/${body.client_invoice_id}`;
    const canon = JSON.stringify({ id, ...body });
    const prev = this.byClient.get(key);
    if (prev) {
      if (prev.canon !== canon) return this.error(res, 409, 6, 'conflict');
      return this.answer(res, prev.invoice);
    }
    const lines = body.lines && body.lines.length ? body.lines : orig.lines.map(({ line_total, ...l }) => l);
    const t = computeTotals(lines, orig.currency, TAX_GROUPS);
    const n = this.nextNumber(outlet, 'CN');
    const inv = {
      id: crypto.randomUUID(), outlet_id: outlet, client_invoice_id: body.client_invoice_id, pos_terminal_id: body.pos_terminal_id,
      cashier_id: body.cashier_id, kind: 'credit_note', status: 'sealed', currency: orig.currency, lines: t.lines, tax_totals: t.tax_totals,
      total_taxable: t.total_taxable, total_tax: t.total_tax, total: t.total, original_invoice_id: id, reason: body.reason,
      fiscal: this.fiscal(outlet, 'CN', n, t.total, orig.currency),
    };
    this.invoices.push(inv);
    this.byClient.set(key, { canon, invoice: inv });
    this.answer(res, inv);
  }
}
