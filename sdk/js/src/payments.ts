// Mobile-money payments (M-Pesa, Airtel Money, Orange Money) from the till: start a collection with
// POST /v1/payments, then follow it with GET /v1/payments/{id} until the provider's answer is final.
//
// Guarantees:
// - One client_payment_id (UUIDv7) per pay(): every retry of the POST (a timeout, a lost answer, a 503)
//   sends it again, and the cloud answers the payment it already started: the customer's phone never gets
//   a second prompt.
// - A sale still in the offline queue can be paid: the payment names its client_invoice_id and the cloud
//   attaches the confirmation to the invoice when the queue seals it. Sealing never waits for a payment.
// - Pay-first (`sale`): the cloud seals the sale when the provider confirms, exactly once; a failed,
//   cancelled or expired payment seals nothing (sale_state not_sealed).

import { ApiError, ValidationError } from './errors.js';
import type { FiscalApi } from './http.js';
import type {
  CreatePaymentRequest, ListPaymentsQuery, ListPaymentsResponse, Payment, PaymentProvider, PaymentStatus,
} from './types.js';

export const PAYMENT_PROVIDERS: readonly PaymentProvider[] = ['mpesa', 'airtel_money', 'orange_money'];
export const FINAL_PAYMENT_STATUSES: readonly PaymentStatus[] = ['confirmed', 'failed', 'cancelled', 'expired'];

/** The payment has its final answer (and a pay-first sale is sealed or known not to be). */
export function isPaymentSettled(p: Payment): boolean {
  if (!FINAL_PAYMENT_STATUSES.includes(p.status)) return false;
  return p.sale_state !== 'waiting' && p.sale_state !== 'retrying';
}

/** Digits only, with its country code, at most 15 (E.164 without "+"); "+254 712 345 678" is accepted. */
export function normalizePhone(phone: string): string {
  const digits = String(phone ?? '').replace(/[\s\-().]/g, '').replace(/^\+/, '');
  if (!/^[1-9]\d{7,14}$/.test(digits)) throw new ValidationError(`phone "${phone}" is not an international number (e.g. 254712345678)`);
  return digits;
}

export async function createPayment(api: FiscalApi, req: CreatePaymentRequest): Promise<Payment> {
  return (await api.request<Payment>('POST', '/v1/payments', req)).body;
}

export async function getPayment(api: FiscalApi, id: string): Promise<Payment> {
  return (await api.request<Payment>('GET', `/v1/payments/${encodeURIComponent(id)}`)).body;
}

export async function listPayments(api: FiscalApi, q: ListPaymentsQuery = {}): Promise<ListPaymentsResponse> {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  const qs = params.toString();
  const r = (await api.request<ListPaymentsResponse>('GET', `/v1/payments${qs ? `?${qs}` : ''}`)).body;
  return { payments: r.payments ?? [], next_page_token: r.next_page_token ?? '' };
}

export interface PayOptions {
  /** How long pay() follows the payment before resolving with it still pending (default 120000 ms; 0: resolve
   * as soon as the provider accepted the request). The payment goes on in the cloud either way. */
  waitMs?: number;
  /** Between two GET /v1/payments/{id} (default 2000 ms). */
  pollIntervalMs?: number;
  /** How long the POST is retried when the cloud cannot be reached or answers 5xx (default 30000 ms). */
  createTimeoutMs?: number;
}

export interface PayHooks {
  /** Each new view of the payment (a status or sale_state change), first the answer to the POST. */
  onUpdate: (p: Payment) => void;
  /** True once the terminal is closing: stop following. */
  closed: () => boolean;
  sleep?: (ms: number) => Promise<void>;
}

// Not unref'd: the caller awaits pay(); an unref'd timer lets Node exit with the promise pending.
const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts the payment (retrying the same request while the outcome is unknown), then follows it. */
export async function runPayment(api: FiscalApi, req: CreatePaymentRequest, options: PayOptions, hooks: PayHooks): Promise<Payment> {
  const sleep = hooks.sleep ?? defaultSleep;
  const createDeadline = Date.now() + (options.createTimeoutMs ?? 30000);
  let payment: Payment | undefined;
  let delay = 250;
  for (;;) {
    try {
      payment = await createPayment(api, req);
      break;
    } catch (e) {
      // Not retried: a refusal (bad phone, provider not configured, the provider said no) or a provider the
      // cloud could not reach (502/503/504 with the reason: the cashier decides, another provider or cash).
      if (!(e instanceof ApiError) || !retryableCreate(e) || Date.now() + delay > createDeadline || hooks.closed()) throw e;
      await sleep(delay);
      delay = Math.min(delay * 2, 4000);
    }
  }
  hooks.onUpdate(payment);
  const waitMs = options.waitMs ?? 120000;
  const interval = Math.max(50, options.pollIntervalMs ?? 2000);
  const deadline = Date.now() + waitMs;
  let last = payment;
  while (!isPaymentSettled(last) && waitMs > 0 && !hooks.closed()) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(interval, left));
    let next: Payment;
    try {
      next = await getPayment(api, last.id);
    } catch (e) {
      // Unreachable for a moment: keep following until the deadline; a refusal (401, 404) ends it.
      if (e instanceof ApiError && e.action === 'retry') continue;
      throw e;
    }
    if (next.status !== last.status || next.sale_state !== last.sale_state || next.invoice_id !== last.invoice_id) hooks.onUpdate(next);
    last = next;
  }
  return last;
}

/** Whether a failed POST /v1/payments is sent again as is: only when it may not have arrived (network,
 * timeout, a dropped call) or the gateway had no payments service to give it to (a 503 without a JSON
 * error). A JSON error from the payments service (the provider is down or refused: 502/503/504 with a
 * reason) ends pay() at once: the cashier chooses another provider or cash. */
function retryableCreate(e: ApiError): boolean {
  if (e.kind !== 'http') return true;
  if (e.status === 429 || e.status === 408 || e.status === 499) return true;
  if (e.status === 409) return e.code === 10; // ABORTED: a concurrent attempt with the same id
  return e.status === 503 && e.code === undefined;
}
