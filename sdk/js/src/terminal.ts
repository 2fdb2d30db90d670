// PosTerminal: one till's session with the cloud. It owns the terminal's durable offline queue, seals
// sales through it (in creation order, one request in flight), reports the terminal's status as events
// and sends periodic heartbeats.
//
// Guarantees:
// - A sale is written to durable storage (with its UUIDv7 client_invoice_id and sold_at) before anything
//   is sent, so no acknowledged sale is ever lost.
// - The request body is fixed at creation and replayed unchanged, so a replay after an unknown outcome
//   (timeout, lost answer, crash) returns the same sealed invoice: no duplicate fiscal event.
// - Unreachable gateway, 5xx, 429, 408 or 409 ABORTED: the draft stays pending; the queue retries with
//   exponential backoff and jitter, keeping creation order (a later draft never overtakes an earlier one).
// - 401/403: the key is wrong or revoked: drafts stay pending, the queue pauses (status.authError).
// - Any other 4xx (and 409 ALREADY_EXISTS): the draft is parked as rejected with the reason, kept in
//   storage and reported (status.rejectedCount, 'rejected' event); later drafts go on.

import { checkCurrency, computeTotals, normalizeLines, normalizePayments, toDraft } from './draft.js';
import { normalizeAmount } from './decimal.js';
import type { Draft, DraftRecord, ProvisionalTotals, SaleInput } from './draft.js';
import { Emitter } from './emitter.js';
import { ApiError, ValidationError } from './errors.js';
import { FiscalApi } from './http.js';
import type { FetchLike } from './http.js';
import { MemoryQueueStore } from './store.js';
import type { QueueStore } from './store.js';
import { PAYMENT_PROVIDERS, getPayment, listPayments, normalizePhone, runPayment } from './payments.js';
import type { PayOptions } from './payments.js';
import type {
  CreateCreditNoteRequest, CreatePaymentRequest, HeartbeatRequest, Invoice, InvoiceLine, ListInvoicesQuery,
  ListInvoicesResponse, ListPaymentsQuery, ListPaymentsResponse, Payment, PaymentProvider, SealInvoiceRequest,
  TaxGroup, TerminalState,
} from './types.js';
import { uuidv7 } from './uuid.js';
import { SDK_VERSION } from './version.js';

export interface BackoffOptions {
  /** First retry delay (default 1000 ms). */
  initialMs?: number;
  /** Cap of the delay (default 60000 ms). */
  maxMs?: number;
  /** Growth factor per consecutive failure (default 2). */
  factor?: number;
  /** Random spread, a fraction of the delay (default 0.2 = ±20 %). */
  jitter?: number;
}

export interface TerminalOptions {
  /** Gateway base URL, e.g. "https://api.fiscal.example". */
  gatewayUrl: string;
  /** The outlet's POS API key. */
  apiKey: string;
  outletId: string;
  posTerminalId: string;
  /** The cashier signed in on this terminal; change it with setCashier(). */
  cashierId: string;
  /** The outlet's currency (ISO 4217). */
  currency: string;
  /** The merchant's tax groups, for validation and the provisional slip's totals. */
  taxGroups: TaxGroup[];
  /** The durable queue (FileQueueStore in Node, IndexedDbQueueStore in browsers). Default: memory only. */
  store?: QueueStore;
  fetch?: FetchLike;
  /** Per-request timeout (default 15000 ms). */
  requestTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Heartbeat period (default 60000 ms); 0 disables heartbeats. */
  heartbeatIntervalMs?: number;
  /** How long sell()/refund() wait for the seal before returning the draft (default 8000 ms). */
  sealWaitMs?: number;
  /** Sealed records kept in the queue for reprints (default 500). */
  keepSealed?: number;
  /** How often a 'status' event refreshes the ages while drafts wait (default 10000 ms; 0 = never). */
  statusIntervalMs?: number;
  /** The terminal's clock in epoch milliseconds (sold_at, ages). Default Date.now. */
  clock?: () => number;
  /** Start replaying and heart-beating at once (default true). */
  autoStart?: boolean;
}

export interface TerminalStatus {
  posTerminalId: string;
  outletId: string;
  cashierId: string;
  /** online: reachable and nothing waiting; syncing: reachable, drafts being sealed; offline: cannot seal now. */
  state: TerminalState;
  /** The last contact with the gateway (seal or heartbeat) got an answer that was not 5xx/429. */
  reachable: boolean;
  /** The key was refused (401/403): drafts wait until the key is fixed (setApiKey). */
  authError: boolean;
  /** Drafts waiting to be sealed. */
  draftCount: number;
  /** Drafts parked as rejected (never dropped). */
  rejectedCount: number;
  /** Age of the oldest waiting draft in seconds (0 when none). */
  oldestDraftAgeSeconds: number;
  oldestDraftSoldAt?: string;
  /** Seal time (fiscal.sealed_at) of the last invoice this terminal got sealed. */
  lastSealAt?: string;
  /** Last successful contact with the gateway (terminal clock). */
  lastContactAt?: string;
  lastHeartbeatAt?: string;
  /** Round trip of the last successful call, milliseconds. */
  gatewayLatencyMs?: number;
  lastError?: string;
  /** When the queue retries next (while backing off). */
  nextRetryAt?: string;
  /** From the last heartbeat answer. */
  offlineGraceSeconds?: number;
  /** server_time minus the terminal's clock, from the last heartbeat (ms). */
  clockSkewMs?: number;
  sdkVersion: string;
}

export interface TerminalEvents {
  status: TerminalStatus;
  draft: Draft;
  sealed: Draft;
  rejected: Draft;
  /** A payment started by pay() changed (first the provider's acceptance, then each status change). */
  payment: Payment;
}

/** What pay() collects: one of `clientInvoiceId`, `draft`, `invoiceId` or `sale` (pay-first). */
export interface PayInput {
  provider: PaymentProvider;
  /** The customer's number with its country code ("254712345678"; "+254 712 345 678" is accepted). */
  phone: string;
  /** Default: the draft's (or pay-first sale's) total. */
  amount?: string | number;
  /** A sale of this terminal, sealed or still in the offline queue. */
  clientInvoiceId?: string;
  /** A draft from sell() (pending or sealed). */
  draft?: Draft;
  /** A sealed invoice's id. */
  invoiceId?: string;
  /** Pay-first: the sale is sealed by the cloud when the provider confirms (not queued on this terminal). */
  sale?: SaleInput;
}

export interface SellOptions {
  /** Milliseconds to wait for the seal (default: the terminal's sealWaitMs); 0 returns the draft at once. */
  wait?: number;
}

export interface RefundInput {
  reason?: string;
  /** Lines refunded; empty or absent = the whole invoice. */
  lines?: SaleInput['lines'];
}

const iso = (ms: number): string => new Date(ms).toISOString();

export class PosTerminal extends Emitter<TerminalEvents> {
  readonly api: FiscalApi;
  readonly outletId: string;
  readonly posTerminalId: string;
  readonly currency: string;
  readonly taxGroups: TaxGroup[];
  private cashier: string;
  private readonly store: QueueStore;
  private readonly clock: () => number;
  private readonly opts: Required<Pick<TerminalOptions, 'heartbeatIntervalMs' | 'sealWaitMs' | 'keepSealed' | 'statusIntervalMs'>> & { backoff: Required<BackoffOptions> };

  private readonly records = new Map<string, DraftRecord>();
  /** Pending drafts in seq order. */
  private pending: DraftRecord[] = [];
  /** Sealed records kept, in seal order. */
  private sealedOrder: string[] = [];
  private rejectedCount = 0;
  private nextSeq = 1;
  /** seq numbers whose first write is not durable yet (the pump must not overtake them). */
  private readonly persisting = new Set<number>();
  private readonly waiters = new Map<string, Array<(d: Draft) => void>>();

  private started = false;
  private closed = false;
  private pumpDone: Promise<void> | undefined;
  private wakeFn: (() => void) | undefined;
  private wakeTimer: ReturnType<typeof setTimeout> | undefined;
  private failures = 0;
  /** Real-time (Date.now) instant before which the queue does not retry. */
  private retryAtReal = 0;
  private inFlight = false;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private statusTimer: ReturnType<typeof setInterval> | undefined;
  private heartbeatInFlight: Promise<void> | undefined;

  private reachable = false;
  private authError = false;
  private lastSealAt: string | undefined;
  private lastContactAt: string | undefined;
  private lastHeartbeatAt: string | undefined;
  private latencyMs: number | undefined;
  private lastError: string | undefined;
  private offlineGraceSeconds: number | undefined;
  private clockSkewMs: number | undefined;

  /** Opens a terminal: loads its queue from the store, then (unless autoStart is false) starts replaying. */
  static async open(options: TerminalOptions): Promise<PosTerminal> {
    const t = new PosTerminal(options);
    await t.load();
    if (options.autoStart !== false) t.start();
    return t;
  }

  /** Use PosTerminal.open() (it loads the queue); the constructor alone does not. */
  constructor(options: TerminalOptions) {
    super();
    for (const k of ['gatewayUrl', 'outletId', 'posTerminalId', 'cashierId', 'currency'] as const) {
      if (!options[k]) throw new ValidationError(`${k} is required`);
    }
    if (!Array.isArray(options.taxGroups) || options.taxGroups.length === 0) throw new ValidationError('taxGroups is required');
    this.api = new FiscalApi({ gatewayUrl: options.gatewayUrl, apiKey: options.apiKey, timeoutMs: options.requestTimeoutMs ?? 15000, fetch: options.fetch });
    this.outletId = options.outletId;
    this.posTerminalId = options.posTerminalId;
    this.cashier = options.cashierId;
    this.currency = checkCurrency(options.currency);
    this.taxGroups = options.taxGroups.map((g) => ({ code: g.code, label: g.label ?? g.code, rate: g.rate ?? '' }));
    this.store = options.store ?? new MemoryQueueStore();
    this.clock = options.clock ?? Date.now;
    const b = options.backoff ?? {};
    this.opts = {
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 60000,
      sealWaitMs: options.sealWaitMs ?? 8000,
      keepSealed: options.keepSealed ?? 500,
      statusIntervalMs: options.statusIntervalMs ?? 10000,
      backoff: { initialMs: b.initialMs ?? 1000, maxMs: b.maxMs ?? 60000, factor: b.factor ?? 2, jitter: b.jitter ?? 0.2 },
    };
  }

  get cashierId(): string {
    return this.cashier;
  }

  /** The cashier for the next sales (a shift change). */
  setCashier(cashierId: string): void {
    if (!cashierId) throw new ValidationError('cashierId is required');
    this.cashier = cashierId;
    this.emitStatus();
  }

  /** Replaces the API key (after a 401/403) and retries at once. */
  setApiKey(apiKey: string): void {
    this.api.apiKey = apiKey;
    this.authError = false;
    this.syncNow();
  }

  // ---------------------------------------------------------------- loading and lifecycle

  private async load(): Promise<void> {
    const recs = await this.store.load();
    recs.sort((a, b) => a.seq - b.seq);
    for (const r of recs) {
      this.records.set(r.client_invoice_id, r);
      if (r.seq >= this.nextSeq) this.nextSeq = r.seq + 1;
      if (r.state === 'pending') this.pending.push(r);
      else if (r.state === 'rejected') this.rejectedCount++;
      else if (r.state === 'sealed') {
        this.sealedOrder.push(r.client_invoice_id);
        const at = r.invoice?.fiscal?.sealed_at;
        if (at && (!this.lastSealAt || at > this.lastSealAt)) this.lastSealAt = at;
      }
    }
    // Records of a previous version or with a torn state would be caught here; all have a seq.
  }

  /** Starts the replay loop, heartbeats and status ticks (done by open() unless autoStart is false). */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.pumpDone = this.pumpLoop();
    if (this.opts.heartbeatIntervalMs > 0) {
      void this.heartbeat();
      this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.opts.heartbeatIntervalMs);
      unref(this.heartbeatTimer);
    } else {
      this.reachable = true;
    }
    if (this.opts.statusIntervalMs > 0) {
      this.statusTimer = setInterval(() => {
        if (this.pending.length > 0) this.emitStatus();
      }, this.opts.statusIntervalMs);
      unref(this.statusTimer);
    }
    this.emitStatus();
  }

  /** Stops timers, lets an in-flight request finish, and closes the store. Pending drafts stay stored. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.wake();
    await this.pumpDone;
    await this.heartbeatInFlight;
    for (const [id, ws] of this.waiters) {
      const r = this.records.get(id);
      if (r) for (const w of ws) w(toDraft(r));
    }
    this.waiters.clear();
    await this.store.close();
  }

  // ---------------------------------------------------------------- sales

  /**
   * Records a sale durably as a draft, then seals it through the queue. Resolves with the draft: state
   * 'sealed' (with `invoice`) when the cloud sealed it within `wait` ms, else 'pending' (print the
   * provisional slip; the queue seals it later) or 'rejected'.
   */
  async sell(sale: SaleInput, options: SellOptions = {}): Promise<Draft> {
    if (this.closed) throw new Error('terminal is closed');
    const currency = checkCurrency(sale.currency ?? this.currency);
    const lines = normalizeLines(sale.lines, currency, this.taxGroups);
    const payments = normalizePayments(sale.payments, currency);
    const now = this.clock();
    const id = uuidv7(now);
    const soldAt = iso(now);
    const request: SealInvoiceRequest = {
      outlet_id: this.outletId,
      client_invoice_id: id,
      pos_terminal_id: this.posTerminalId,
      cashier_id: this.cashier,
      currency,
      lines,
      sold_at: soldAt,
    };
    if (payments) request.payments = payments;
    if (sale.buyer && Object.values(sale.buyer).some((v) => v)) request.buyer = { ...sale.buyer };
    const rec = this.newRecord('invoice', id, now, request, computeTotals(lines, currency, this.taxGroups));
    return this.enqueue(rec, options);
  }

  /**
   * A credit note (refund) for a sealed invoice (an Invoice, its id) or for a sale still in this
   * terminal's queue (its Draft): queued and replayed like a sale, after the original.
   */
  async refund(original: Invoice | Draft | string, input: RefundInput = {}, options: SellOptions = {}): Promise<Draft> {
    if (this.closed) throw new Error('terminal is closed');
    let originalInvoiceId: string | undefined;
    let originalClientId: string | undefined;
    let originalLines: InvoiceLine[] | undefined;
    let currency = this.currency;
    if (typeof original === 'string') {
      originalInvoiceId = original;
    } else if ('fiscal' in original || ('id' in original && (original as Invoice).id)) {
      const inv = original as Invoice;
      originalInvoiceId = inv.id;
      originalLines = inv.lines;
      currency = inv.currency || currency;
    } else {
      const d = original as Draft;
      const rec = this.records.get(d.client_invoice_id);
      const state = rec?.state ?? d.state;
      const inv = rec?.invoice ?? d.invoice;
      if (state === 'rejected') throw new ValidationError('the original sale was rejected; there is nothing to refund');
      if (inv) {
        originalInvoiceId = inv.id;
        originalLines = inv.lines;
        currency = inv.currency || currency;
      } else {
        if (!rec) throw new ValidationError('unknown draft: not in this terminal queue');
        originalClientId = d.client_invoice_id;
        originalLines = rec.provisional.lines;
        currency = rec.provisional.currency;
      }
    }
    if (!originalInvoiceId && !originalClientId) throw new ValidationError('refund: no original invoice');
    const lines = input.lines && input.lines.length > 0 ? normalizeLines(input.lines, currency, this.taxGroups) : undefined;
    const now = this.clock();
    const id = uuidv7(now);
    const request: CreateCreditNoteRequest = {
      client_invoice_id: id,
      pos_terminal_id: this.posTerminalId,
      cashier_id: this.cashier,
      reason: input.reason ?? '',
    };
    if (lines) request.lines = lines;
    const basis = lines ?? (originalLines ?? []).map((l) => ({ description: l.description, quantity: l.quantity, unit_price: l.unit_price, tax_group: l.tax_group }));
    const totals = basis.length > 0 ? computeTotals(basis, currency, this.taxGroups) : { currency, lines: [], tax_totals: [], total_taxable: '', total_tax: '', total: '' };
    const rec = this.newRecord('credit_note', id, now, request, totals);
    if (originalInvoiceId) rec.original_invoice_id = originalInvoiceId;
    if (originalClientId) rec.original_client_invoice_id = originalClientId;
    return this.enqueue(rec, options);
  }

  private newRecord(kind: DraftRecord['kind'], id: string, now: number, request: DraftRecord['request'], provisional: ProvisionalTotals): DraftRecord {
    return {
      v: 1,
      client_invoice_id: id,
      seq: this.nextSeq++,
      kind,
      state: 'pending',
      created_at: iso(now),
      outlet_id: this.outletId,
      pos_terminal_id: this.posTerminalId,
      cashier_id: this.cashier,
      request,
      provisional,
      attempts: 0,
    };
  }

  private async enqueue(rec: DraftRecord, options: SellOptions): Promise<Draft> {
    this.persisting.add(rec.seq);
    try {
      // Durable before anything is sent.
      await this.store.put(rec);
    } finally {
      this.persisting.delete(rec.seq);
    }
    this.records.set(rec.client_invoice_id, rec);
    insertBySeq(this.pending, rec);
    const draft = toDraft(rec);
    this.emit('draft', draft);
    // A new sale probes the gateway at once, even while backing off (one request per sale at most).
    if (!this.authError) this.retryAtReal = 0;
    this.wake();
    this.emitStatus();
    const wait = options.wait ?? this.opts.sealWaitMs;
    if (wait > 0) return this.waitFor(rec.client_invoice_id, wait);
    return draft;
  }

  /**
   * Waits until the draft is sealed or rejected, an attempt to reach the cloud failed (the draft stays
   * pending), or `timeoutMs` passed; resolves with the draft's current view.
   */
  waitFor(clientInvoiceId: string, timeoutMs: number): Promise<Draft> {
    const rec = this.records.get(clientInvoiceId);
    if (!rec) return Promise.reject(new ValidationError(`unknown draft ${clientInvoiceId}`));
    if (rec.state !== 'pending' || this.closed) return Promise.resolve(toDraft(rec));
    return new Promise<Draft>((resolve) => {
      let done = false;
      const finish = (d: Draft): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(d);
      };
      const timer = setTimeout(() => {
        const list = this.waiters.get(clientInvoiceId);
        if (list) {
          const i = list.indexOf(finish);
          if (i >= 0) list.splice(i, 1);
          if (list.length === 0) this.waiters.delete(clientInvoiceId);
        }
        finish(toDraft(this.records.get(clientInvoiceId)!));
      }, timeoutMs);
      let list = this.waiters.get(clientInvoiceId);
      if (!list) {
        list = [];
        this.waiters.set(clientInvoiceId, list);
      }
      list.push(finish);
    });
  }

  /** Resolves true once no draft is pending, false if `timeoutMs` passes first. */
  async drain(timeoutMs = 60000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    this.syncNow();
    while (this.pending.length > 0 || this.persisting.size > 0) {
      if (Date.now() >= deadline || this.closed) return false;
      await new Promise<void>((resolve) => {
        const off = this.on('status', () => {
          off();
          clearTimeout(t);
          resolve();
        });
        const t = setTimeout(() => {
          off();
          resolve();
        }, Math.min(250, Math.max(1, deadline - Date.now())));
      });
    }
    return true;
  }

  /** Retries at once (e.g. when the browser says it is online again). */
  syncNow(): void {
    this.retryAtReal = 0;
    this.wake();
  }

  /** Moves a rejected draft back to the queue (e.g. after fixing the outlet's configuration). */
  async requeue(clientInvoiceId: string): Promise<Draft> {
    const rec = this.records.get(clientInvoiceId);
    if (!rec || rec.state !== 'rejected') throw new ValidationError(`${clientInvoiceId} is not a rejected draft`);
    rec.state = 'pending';
    delete rec.rejected_at;
    delete rec.reject_reason;
    delete rec.reject_status;
    delete rec.reject_code;
    await this.store.put(rec);
    this.rejectedCount--;
    insertBySeq(this.pending, rec);
    this.syncNow();
    this.emitStatus();
    return toDraft(rec);
  }

  /** A draft (pending, rejected or recently sealed) by its client_invoice_id. */
  getDraft(clientInvoiceId: string): Draft | undefined {
    const r = this.records.get(clientInvoiceId);
    return r ? toDraft(r) : undefined;
  }

  /** Drafts in the queue, in creation order (default: pending and rejected). */
  drafts(states: Array<Draft['state']> = ['pending', 'rejected']): Draft[] {
    return [...this.records.values()].filter((r) => states.includes(r.state)).sort((a, b) => a.seq - b.seq).map(toDraft);
  }

  // ---------------------------------------------------------------- mobile money

  /**
   * Asks the customer's phone for a mobile-money payment and follows it: resolves with the Payment once the
   * provider's answer is final (or after `waitMs`, still pending), emitting 'payment' on every change. Works
   * for a draft still in the offline queue (the payment carries its client_invoice_id and is attached to the
   * invoice when the queue seals it). Needs the cloud: an unreachable gateway or provider rejects with an
   * ApiError and nothing is charged. One client_payment_id per call: retries never prompt twice.
   */
  async pay(input: PayInput, options: PayOptions = {}): Promise<Payment> {
    if (this.closed) throw new Error('terminal is closed');
    if (!input || !PAYMENT_PROVIDERS.includes(input.provider)) throw new ValidationError(`provider must be one of ${PAYMENT_PROVIDERS.join(', ')}`);
    const phone = normalizePhone(input.phone);
    const refs = [input.clientInvoiceId, input.draft, input.invoiceId, input.sale].filter((x) => x !== undefined && x !== null && x !== '');
    if (refs.length !== 1) throw new ValidationError('pay: give exactly one of clientInvoiceId, draft, invoiceId or sale');
    const now = this.clock();
    const req: CreatePaymentRequest = {
      outlet_id: this.outletId, provider: input.provider, amount: '', currency: this.currency, phone, client_payment_id: uuidv7(now),
    };
    let total: string | undefined;
    if (input.sale) {
      const currency = checkCurrency(input.sale.currency ?? this.currency);
      const lines = normalizeLines(input.sale.lines, currency, this.taxGroups);
      const payments = normalizePayments(input.sale.payments, currency);
      const sale: SealInvoiceRequest = {
        outlet_id: this.outletId, client_invoice_id: uuidv7(now), pos_terminal_id: this.posTerminalId, cashier_id: this.cashier,
        currency, lines, sold_at: iso(now),
      };
      if (payments) sale.payments = payments;
      if (input.sale.buyer && Object.values(input.sale.buyer).some((v) => v)) sale.buyer = { ...input.sale.buyer };
      req.sale = sale;
      req.currency = currency;
      total = computeTotals(lines, currency, this.taxGroups).total;
    } else if (input.draft) {
      const rec = this.records.get(input.draft.client_invoice_id);
      const draft = rec ? toDraft(rec) : input.draft;
      if (draft.kind !== 'invoice') throw new ValidationError('pay: a credit note is not paid');
      if (draft.state === 'rejected') throw new ValidationError('pay: the sale was rejected; fix it before taking a payment');
      if (draft.invoice?.id) req.invoice_id = draft.invoice.id;
      else req.client_invoice_id = draft.client_invoice_id;
      req.currency = draft.provisional.currency || this.currency;
      total = draft.invoice?.total ?? draft.provisional.total;
    } else if (input.clientInvoiceId) {
      const rec = this.records.get(input.clientInvoiceId);
      if (rec?.invoice?.id) req.invoice_id = rec.invoice.id;
      else req.client_invoice_id = input.clientInvoiceId;
      if (rec) total = rec.invoice?.total ?? rec.provisional.total;
    } else {
      req.invoice_id = String(input.invoiceId);
    }
    const amount = input.amount ?? total;
    if (amount === undefined || amount === '') throw new ValidationError('pay: amount is required');
    req.amount = normalizeAmount(amount, req.currency, 'amount');
    if (req.amount.replace(/[0.]/g, '') === '') throw new ValidationError('pay: amount must be greater than zero');
    return runPayment(this.api, req, options, {
      onUpdate: (p) => this.emit('payment', p),
      closed: () => this.closed,
    });
  }

  /** A payment's current state (online only). */
  getPayment(id: string): Promise<Payment> {
    return getPayment(this.api, id);
  }

  /** This outlet's payments by default (filter by invoice_id, client_invoice_id or status). */
  listPayments(query: ListPaymentsQuery = {}): Promise<ListPaymentsResponse> {
    return listPayments(this.api, { outlet_id: this.outletId, ...query });
  }

  // ---------------------------------------------------------------- online-only reads

  getInvoice(id: string): Promise<Invoice> {
    return this.api.getInvoice(id);
  }

  /** This terminal's invoices by default (pass other filters to widen or narrow). */
  listInvoices(query: ListInvoicesQuery = {}): Promise<ListInvoicesResponse> {
    return this.api.listInvoices({ outlet_id: this.outletId, pos_terminal_id: this.posTerminalId, ...query });
  }

  // ---------------------------------------------------------------- the replay loop

  private wake(): void {
    const f = this.wakeFn;
    this.wakeFn = undefined;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    f?.();
  }

  private sleep(ms: number | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wakeFn = resolve;
      if (ms !== undefined) this.wakeTimer = setTimeout(() => this.wake(), ms);
    });
  }

  private async pumpLoop(): Promise<void> {
    while (!this.closed) {
      const head = this.pending[0];
      if (!head) {
        this.emitStatus();
        await this.sleep(undefined);
        continue;
      }
      // Never overtake an earlier draft whose write is still in progress.
      let blocked = false;
      for (const s of this.persisting) if (s < head.seq) blocked = true;
      if (blocked) {
        await this.sleep(50);
        continue;
      }
      const wait = this.retryAtReal - Date.now();
      if (wait > 0) {
        await this.sleep(wait);
        continue;
      }
      this.inFlight = true;
      try {
        await this.attempt(head);
      } catch (e) {
        // Storage failure after an answer: keep the draft pending; the replay is idempotent.
        this.lastError = `storage: ${(e as Error).message}`;
        this.scheduleRetry(undefined);
      } finally {
        this.inFlight = false;
      }
    }
  }

  private backoffDelay(retryAfterSeconds: number | undefined): number {
    const b = this.opts.backoff;
    const base = Math.min(b.maxMs, b.initialMs * Math.pow(b.factor, Math.max(0, this.failures - 1)));
    const spread = base * b.jitter;
    let d = base - spread + Math.random() * 2 * spread;
    if (retryAfterSeconds !== undefined) d = Math.max(d, retryAfterSeconds * 1000);
    return Math.max(0, Math.round(d));
  }

  private scheduleRetry(retryAfterSeconds: number | undefined): void {
    this.failures++;
    this.retryAtReal = Date.now() + this.backoffDelay(retryAfterSeconds);
  }

  private async attempt(rec: DraftRecord): Promise<void> {
    rec.attempts++;
    rec.last_attempt_at = iso(this.clock());
    let invoice: Invoice;
    let latency: number;
    try {
      if (rec.kind === 'invoice') {
        const r = await this.api.request<Invoice>('POST', '/v1/invoices', rec.request);
        invoice = r.body;
        latency = r.latencyMs;
      } else {
        const originalId = this.resolveOriginal(rec);
        if (!originalId.ok) {
          await this.park(rec, originalId.reason, 0, undefined);
          return;
        }
        const body = { ...(rec.request as CreateCreditNoteRequest) };
        delete body.id;
        const r = await this.api.request<Invoice>('POST', `/v1/invoices/${encodeURIComponent(originalId.id)}/credit-notes`, body);
        invoice = r.body;
        latency = r.latencyMs;
      }
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      await this.onFailure(rec, e);
      return;
    }
    if (!invoice || typeof invoice !== 'object' || (invoice.client_invoice_id && invoice.client_invoice_id !== rec.client_invoice_id)) {
      await this.onFailure(rec, new ApiError('the gateway answered with another invoice than the one sent', { status: 200, kind: 'protocol' }));
      return;
    }
    // Sealed: record it durably, then tell.
    rec.state = 'sealed';
    rec.invoice = invoice;
    rec.confirmed_at = iso(this.clock());
    delete rec.last_error;
    // Lazy: if this write were lost (power cut), the draft would replay and get this same invoice back.
    await this.store.put(rec, { lazy: true });
    if (this.pending[0] === rec) this.pending.shift();
    else this.pending = this.pending.filter((r) => r !== rec);
    this.sealedOrder.push(rec.client_invoice_id);
    this.failures = 0;
    this.retryAtReal = 0;
    this.reachable = true;
    this.authError = false;
    this.lastError = undefined;
    this.latencyMs = latency;
    this.lastContactAt = iso(this.clock());
    const sealedAt = invoice.fiscal?.sealed_at;
    if (sealedAt) this.lastSealAt = sealedAt;
    const d = toDraft(rec);
    this.resolveWaiters(rec);
    this.emit('sealed', d);
    this.emitStatus();
    await this.trimSealed();
  }

  private resolveOriginal(rec: DraftRecord): { ok: true; id: string } | { ok: false; reason: string } {
    if (rec.original_invoice_id) return { ok: true, id: rec.original_invoice_id };
    const orig = rec.original_client_invoice_id ? this.records.get(rec.original_client_invoice_id) : undefined;
    if (orig?.state === 'sealed' && orig.invoice?.id) return { ok: true, id: orig.invoice.id };
    if (orig?.state === 'rejected') return { ok: false, reason: 'the original sale was rejected' };
    return { ok: false, reason: 'the original sale is not sealed and not in this queue' };
  }

  private async onFailure(rec: DraftRecord, e: ApiError): Promise<void> {
    rec.last_error = e.message;
    this.lastError = e.message;
    const action = e.action;
    if (action === 'retry' || action === 'auth') {
      this.reachable = e.kind === 'http' && e.status < 500 && e.status !== 429 ? true : false;
      if (action === 'auth') this.authError = true;
      this.scheduleRetry(e.retryAfterSeconds);
      this.emitStatus();
      // Whoever waits for a seal learns now that it will not come soon: print the provisional slip.
      this.releaseAllWaiters();
      return;
    }
    // The server answered and refused the draft itself: park it, go on with the next one.
    this.reachable = true;
    this.lastContactAt = iso(this.clock());
    await this.park(rec, e.message, e.status, e.code);
  }

  private async park(rec: DraftRecord, reason: string, status: number, code: number | undefined): Promise<void> {
    rec.state = 'rejected';
    rec.rejected_at = iso(this.clock());
    rec.reject_reason = reason;
    rec.reject_status = status;
    if (code !== undefined) rec.reject_code = code;
    await this.store.put(rec);
    this.pending = this.pending.filter((r) => r !== rec);
    this.rejectedCount++;
    const d = toDraft(rec);
    this.resolveWaiters(rec);
    this.emit('rejected', d);
    this.emitStatus();
  }

  private resolveWaiters(rec: DraftRecord): void {
    const list = this.waiters.get(rec.client_invoice_id);
    if (!list) return;
    this.waiters.delete(rec.client_invoice_id);
    const d = toDraft(rec);
    for (const w of list) w(d);
  }

  private releaseAllWaiters(): void {
    const all = [...this.waiters.entries()];
    this.waiters.clear();
    for (const [id, list] of all) {
      const r = this.records.get(id);
      if (!r) continue;
      const d = toDraft(r);
      for (const w of list) w(d);
    }
  }

  private async trimSealed(): Promise<void> {
    const excess = this.sealedOrder.length - this.opts.keepSealed;
    if (excess <= 0) return;
    const referenced = new Set<string>();
    for (const p of this.pending) if (p.original_client_invoice_id) referenced.add(p.original_client_invoice_id);
    const drop: string[] = [];
    const keep: string[] = [];
    for (let i = 0; i < this.sealedOrder.length; i++) {
      const id = this.sealedOrder[i]!;
      if (i < excess && !referenced.has(id)) drop.push(id);
      else keep.push(id);
    }
    this.sealedOrder = keep;
    for (const id of drop) {
      this.records.delete(id);
      await this.store.delete(id);
    }
  }

  // ---------------------------------------------------------------- status and heartbeats

  get status(): TerminalStatus {
    const now = this.clock();
    const oldest = this.pending[0];
    const draftCount = this.pending.length;
    const state: TerminalState = !this.reachable || this.authError ? 'offline' : draftCount > 0 ? 'syncing' : 'online';
    const s: TerminalStatus = {
      posTerminalId: this.posTerminalId,
      outletId: this.outletId,
      cashierId: this.cashier,
      state,
      reachable: this.reachable,
      authError: this.authError,
      draftCount,
      rejectedCount: this.rejectedCount,
      oldestDraftAgeSeconds: oldest ? Math.max(0, Math.floor((now - Date.parse(oldest.created_at)) / 1000)) : 0,
      sdkVersion: SDK_VERSION,
    };
    if (oldest) s.oldestDraftSoldAt = oldest.created_at;
    if (this.lastSealAt) s.lastSealAt = this.lastSealAt;
    if (this.lastContactAt) s.lastContactAt = this.lastContactAt;
    if (this.lastHeartbeatAt) s.lastHeartbeatAt = this.lastHeartbeatAt;
    if (this.latencyMs !== undefined) s.gatewayLatencyMs = Math.round(this.latencyMs * 10) / 10;
    if (this.lastError) s.lastError = this.lastError;
    if (draftCount > 0 && this.retryAtReal > Date.now()) s.nextRetryAt = iso(now + (this.retryAtReal - Date.now()));
    if (this.offlineGraceSeconds !== undefined) s.offlineGraceSeconds = this.offlineGraceSeconds;
    if (this.clockSkewMs !== undefined) s.clockSkewMs = this.clockSkewMs;
    return s;
  }

  /** Subscribes to status changes (called at once with the current status); returns the unsubscribe function. */
  subscribe(listener: (s: TerminalStatus) => void): () => void {
    const off = this.on('status', listener);
    try {
      listener(this.status);
    } catch {
      /* a listener's bug is its own */
    }
    return off;
  }

  private lastStatusKey = '';
  private emitStatus(): void {
    const s = this.status;
    const key = JSON.stringify({ ...s, oldestDraftAgeSeconds: 0 }) + (s.draftCount > 0 ? s.oldestDraftAgeSeconds : '');
    if (key === this.lastStatusKey) return;
    this.lastStatusKey = key;
    this.emit('status', s);
  }

  /** Sends one heartbeat now (also done every heartbeatIntervalMs). Never throws. */
  heartbeat(): Promise<void> {
    if (this.heartbeatInFlight) return this.heartbeatInFlight;
    const p = this.doHeartbeat().finally(() => {
      this.heartbeatInFlight = undefined;
    });
    this.heartbeatInFlight = p;
    return p;
  }

  private async doHeartbeat(): Promise<void> {
    if (this.closed) return;
    const s = this.status;
    const body: HeartbeatRequest = {
      pos_terminal_id: this.posTerminalId,
      outlet_id: this.outletId,
      cashier_id: this.cashier,
      draft_count: s.draftCount,
      oldest_draft_age_seconds: s.oldestDraftAgeSeconds,
      rejected_count: s.rejectedCount,
      sdk_version: SDK_VERSION,
      state: s.state,
    };
    const t0 = Date.now();
    try {
      const r = await this.api.heartbeat(this.posTerminalId, body);
      const t1 = Date.now();
      const wasUnreachable = !this.reachable;
      this.reachable = true;
      this.authError = false;
      this.latencyMs = r.latencyMs;
      this.lastHeartbeatAt = iso(this.clock());
      this.lastContactAt = this.lastHeartbeatAt;
      const serverTime = r.body.server_time ? Date.parse(r.body.server_time) : NaN;
      if (Number.isFinite(serverTime)) this.clockSkewMs = Math.round(serverTime - (this.clock() - (t1 - t0) / 2));
      const grace = Number(r.body.offline_grace_seconds);
      if (Number.isFinite(grace) && grace > 0) this.offlineGraceSeconds = grace;
      // The cloud answers again: replay now rather than at the end of the backoff.
      if (wasUnreachable || this.pending.length > 0) this.syncNow();
    } catch (e) {
      if (e instanceof ApiError) {
        if (e.action === 'auth') {
          this.authError = true;
          this.reachable = true;
        } else if (e.action === 'retry') {
          this.reachable = false;
        } else {
          // 4xx on a heartbeat (e.g. the route is not deployed): the gateway is reachable.
          this.reachable = true;
        }
        this.lastError = `heartbeat: ${e.message}`;
      }
    }
    this.emitStatus();
  }
}

function insertBySeq(list: DraftRecord[], rec: DraftRecord): void {
  if (list.length === 0 || list[list.length - 1]!.seq < rec.seq) {
    list.push(rec);
    return;
  }
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]!.seq < rec.seq) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, rec);
}

function unref(t: unknown): void {
  const u = (t as { unref?: () => void }).unref;
  if (typeof u === 'function') u.call(t);
}
