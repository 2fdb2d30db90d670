// A small REST client for the Fiscal Cloud gateway (Envoy), built on the standard fetch API so that it
// runs unchanged in browsers and in Node >= 20.

import { ApiError } from './errors.js';
import { SDK_NAME, SDK_VERSION } from './version.js';
import type {
  CreateCreditNoteRequest, HeartbeatRequest, HeartbeatResponse, Invoice, KeySet, ListInvoicesQuery,
  ListInvoicesResponse, SealInvoiceRequest, TerminalInfo, VerifyReceiptResponse,
} from './types.js';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface ApiClientOptions {
  /** The gateway's base URL, e.g. "https://api.fiscal.example" or "http://127.0.0.1:8080". */
  gatewayUrl: string;
  /** The API key sent as `Authorization: Bearer <key>` (a POS key is scoped to one outlet). */
  apiKey?: string;
  /** Per-request timeout in milliseconds (default 15000). */
  timeoutMs?: number;
  /** A fetch implementation (default: globalThis.fetch). */
  fetch?: FetchLike;
}

export interface ApiResult<T> {
  status: number;
  body: T;
  latencyMs: number;
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

function query(params: Record<string, unknown>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export class FiscalApi {
  readonly gatewayUrl: string;
  apiKey: string | undefined;
  timeoutMs: number;
  private readonly fetchImpl: FetchLike;

  constructor(opts: ApiClientOptions) {
    if (!opts.gatewayUrl) throw new TypeError('gatewayUrl is required');
    this.gatewayUrl = opts.gatewayUrl.replace(/\/+$/, '');
    this.apiKey = opts.apiKey;
    this.timeoutMs = opts.timeoutMs ?? 15000;
    const f = opts.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (!f) throw new TypeError('no fetch implementation available');
    // Bind to the global object: browsers throw "Illegal invocation" for an unbound window.fetch.
    this.fetchImpl = opts.fetch ? f : (input, init) => globalThis.fetch(input, init);
  }

  /** One HTTP call. Throws ApiError for a network failure, a timeout or a non-2xx answer. */
  async request<T>(method: string, path: string, body?: unknown, opts: { auth?: boolean; timeoutMs?: number } = {}): Promise<ApiResult<T>> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.auth !== false && this.apiKey) headers['Authorization'] = `Bearer ${this.apiKey}`;
    // Browsers forbid setting User-Agent; x-user-agent (the gRPC-web convention, allowed by the
    // gateway's CORS policy) identifies the SDK everywhere.
    headers['X-User-Agent'] = `${SDK_NAME}/${SDK_VERSION}`;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    const t0 = now();
    let res: Response;
    try {
      res = await this.fetchImpl(this.gatewayUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
        signal: ctrl.signal,
      });
    } catch (e) {
      clearTimeout(timer);
      const timedOut = ctrl.signal.aborted;
      throw new ApiError(timedOut ? `no answer from ${this.gatewayUrl} within ${timeoutMs} ms` : `cannot reach ${this.gatewayUrl}: ${describe(e)}`, {
        status: 0, kind: timedOut ? 'timeout' : 'network', cause: e,
      });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      clearTimeout(timer);
      // The connection broke while the body was streaming: the answer was lost.
      throw new ApiError(`answer from ${this.gatewayUrl} lost: ${describe(e)}`, { status: 0, kind: ctrl.signal.aborted ? 'timeout' : 'network', cause: e });
    }
    clearTimeout(timer);
    const latencyMs = now() - t0;
    let json: unknown = undefined;
    if (text.length > 0) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    if (!res.ok) {
      const err = (json && typeof json === 'object' ? json : {}) as { code?: unknown; message?: unknown; details?: unknown };
      const ra = res.headers.get('retry-after');
      const retryAfterSeconds = ra && /^\d+$/.test(ra.trim()) ? Number(ra.trim()) : undefined;
      const message = typeof err.message === 'string' && err.message ? err.message : text.slice(0, 300) || res.statusText || `HTTP ${res.status}`;
      throw new ApiError(`${method} ${path}: HTTP ${res.status}: ${message}`, {
        status: res.status,
        code: typeof err.code === 'number' ? err.code : undefined,
        details: Array.isArray(err.details) ? err.details : [],
        retryAfterSeconds,
        kind: 'http',
      });
    }
    if (json === undefined) {
      // A 2xx without a JSON body is not an answer we can trust (a proxy's page, a truncated body).
      throw new ApiError(`${method} ${path}: HTTP ${res.status} without a JSON body`, { status: res.status, kind: 'protocol' });
    }
    return { status: res.status, body: json as T, latencyMs };
  }

  /** Seals a sale (idempotent on outlet_id + client_invoice_id). */
  async sealInvoice(req: SealInvoiceRequest): Promise<Invoice> {
    return (await this.request<Invoice>('POST', '/v1/invoices', req)).body;
  }

  async getInvoice(id: string): Promise<Invoice> {
    return (await this.request<Invoice>('GET', `/v1/invoices/${encodeURIComponent(id)}`)).body;
  }

  async listInvoices(q: ListInvoicesQuery = {}): Promise<ListInvoicesResponse> {
    const r = (await this.request<ListInvoicesResponse>('GET', `/v1/invoices${query(q as Record<string, unknown>)}`)).body;
    return { invoices: r.invoices ?? [], next_page_token: r.next_page_token ?? '' };
  }

  /** Every invoice matching the query, following next_page_token. */
  async *iterateInvoices(q: ListInvoicesQuery = {}): AsyncGenerator<Invoice> {
    let token = q.page_token ?? '';
    for (;;) {
      const page = await this.listInvoices({ ...q, page_token: token || undefined });
      for (const inv of page.invoices) yield inv;
      if (!page.next_page_token) return;
      token = page.next_page_token;
    }
  }

  async allInvoices(q: ListInvoicesQuery = {}): Promise<Invoice[]> {
    const out: Invoice[] = [];
    for await (const inv of this.iterateInvoices(q)) out.push(inv);
    return out;
  }

  async createCreditNote(invoiceId: string, req: CreateCreditNoteRequest): Promise<Invoice> {
    const body = { ...req };
    delete body.id;
    return (await this.request<Invoice>('POST', `/v1/invoices/${encodeURIComponent(invoiceId)}/credit-notes`, body)).body;
  }

  async keys(): Promise<KeySet> {
    return (await this.request<KeySet>('GET', '/v1/keys', undefined, { auth: false })).body;
  }

  /** Verifies a receipt from its QR code: pass the QR's URL (any host) or its query parameters. */
  async verify(qr: string | Record<string, string>): Promise<VerifyReceiptResponse> {
    let qs: string;
    if (typeof qr === 'string') {
      const i = qr.indexOf('?');
      qs = i >= 0 ? qr.slice(i) : `?${qr}`;
    } else {
      qs = query(qr);
    }
    return (await this.request<VerifyReceiptResponse>('GET', `/v1/verify${qs}`, undefined, { auth: false })).body;
  }

  async heartbeat(posTerminalId: string, req: HeartbeatRequest): Promise<ApiResult<HeartbeatResponse>> {
    return this.request<HeartbeatResponse>('POST', `/v1/terminals/${encodeURIComponent(posTerminalId)}/heartbeat`, req);
  }

  async listTerminals(outletId?: string): Promise<TerminalInfo[]> {
    const r = (await this.request<{ terminals?: TerminalInfo[] }>('GET', `/v1/terminals${query({ outlet_id: outletId })}`)).body;
    return r.terminals ?? [];
  }
}

function describe(e: unknown): string {
  if (e && typeof e === 'object') {
    const err = e as { message?: string; cause?: { code?: string; message?: string } };
    const c = err.cause;
    if (c && (c.code || c.message)) return `${err.message ?? 'error'} (${c.code ?? c.message})`;
    if (err.message) return err.message;
  }
  return String(e);
}
