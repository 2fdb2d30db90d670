// Verifying Fiscal Cloud webhooks (docs/webhooks.md), the Standard Webhooks way: HMAC-SHA256 over
// "<webhook-id>.<webhook-timestamp>.<body>" keyed with the base64 part of a `whsec_` secret, any of the
// space-separated `v1,<base64>` signatures may match (two during a secret rotation). Web Crypto only, so
// the same code runs in browsers and in Node >= 19 (globalThis.crypto); no Node-only import.

// ---- The events (docs/webhooks/schemas/*.json is the contract; these types mirror it) ----

/** Common fields of every event: the exact JSON object POSTed. */
export interface WebhookEnvelope<T extends string, D, O extends string | null = string> {
  /** The event's UUID: equal to the `webhook-id` header, the same on every attempt and resend. */
  id: string;
  type: T;
  /** When the event happened (RFC 3339 UTC, milliseconds); not when the attempt was sent. */
  timestamp: string;
  merchant_id: string;
  /** The outlet the event is about; null for events about no outlet (`webhook.test`). */
  outlet_id: O;
  data: D;
}

export interface InvoiceSealedData {
  invoice_id: string;
  kind: 'invoice' | 'credit_note';
  outlet_id: string;
  fiscal_number: string;
  client_invoice_id: string;
  pos_terminal_id: string;
  cashier_id: string;
  /** Gross total, tax included, as a decimal string; a credit note's is the amount refunded (positive). */
  total: string;
  currency: string;
  sealed_at: string;
  /** Credit notes: the invoice refunded. Invoices: null. */
  original_invoice_id: string | null;
}

export interface InvoiceSyncSuccessData {
  invoice_id: string;
  kind: 'invoice' | 'credit_note';
  outlet_id: string;
  fiscal_number: string;
  dgi_code: string;
  attempts: number;
  synced_at: string;
}

export interface InvoiceSyncFailedData {
  invoice_id: string;
  kind: 'invoice' | 'credit_note';
  outlet_id: string;
  fiscal_number: string;
  reason: string;
  dgi_error_code: string | null;
  attempts: number;
  failed_at: string;
}

export interface ReportGeneratedData {
  report_id: string;
  kind: 'x' | 'z' | 'z_supplementary';
  outlet_id: string;
  fiscal_number: string;
  /** X reports only. */
  shift_id: string | null;
  /** X reports only. */
  pos_terminal_id: string | null;
  /** Z reports only: YYYY-MM-DD in the outlet's time zone. */
  business_date: string | null;
  drafts_waiting: number;
  generated_at: string;
}

export interface OutletOfflineAlertData {
  alert_id: string;
  outlet_id: string;
  pos_terminal_id: string;
  reason: 'silent' | 'old_drafts';
  last_contact_at: string;
  draft_count: number;
  oldest_draft_age_seconds: number | null;
  grace_period_seconds: number;
  raised_at: string;
}

export type MobileMoneyProvider = 'mpesa' | 'airtel_money' | 'orange_money';

export interface PaymentConfirmedData {
  payment_id: string;
  outlet_id: string;
  provider: MobileMoneyProvider;
  provider_reference: string;
  amount: string;
  requested_amount: string;
  amount_mismatch: boolean;
  currency: string;
  phone_masked: string;
  invoice_id: string | null;
  client_invoice_id: string | null;
  confirmed_at: string;
}

export interface PaymentFailedData {
  payment_id: string;
  outlet_id: string;
  provider: MobileMoneyProvider;
  status: 'failed' | 'cancelled' | 'expired';
  reason: string;
  provider_reference: string | null;
  requested_amount: string;
  currency: string;
  invoice_id: string | null;
  client_invoice_id: string | null;
  failed_at: string;
}

export interface WebhookTestData {
  endpoint_id: string;
  message: string;
}

export type InvoiceSealedEvent = WebhookEnvelope<'invoice.sealed', InvoiceSealedData>;
export type InvoiceSyncSuccessEvent = WebhookEnvelope<'invoice.sync.success', InvoiceSyncSuccessData>;
export type InvoiceSyncFailedEvent = WebhookEnvelope<'invoice.sync.failed', InvoiceSyncFailedData>;
export type ReportGeneratedEvent = WebhookEnvelope<'report.generated', ReportGeneratedData>;
export type OutletOfflineAlertEvent = WebhookEnvelope<'outlet.offline_alert', OutletOfflineAlertData>;
export type PaymentConfirmedEvent = WebhookEnvelope<'payment.confirmed', PaymentConfirmedData>;
export type PaymentFailedEvent = WebhookEnvelope<'payment.failed', PaymentFailedData>;
export type WebhookTestEvent = WebhookEnvelope<'webhook.test', WebhookTestData, null>;

/** Every event a webhook endpoint can receive, discriminated by `type`. */
export type WebhookEvent =
  | InvoiceSealedEvent
  | InvoiceSyncSuccessEvent
  | InvoiceSyncFailedEvent
  | ReportGeneratedEvent
  | OutletOfflineAlertEvent
  | PaymentConfirmedEvent
  | PaymentFailedEvent
  | WebhookTestEvent;

export type WebhookEventType = WebhookEvent['type'];

/** The event types, `webhook.test` included (it is sent by the test call, not subscribable). */
export const WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = Object.freeze([
  'invoice.sealed', 'invoice.sync.success', 'invoice.sync.failed', 'report.generated', 'outlet.offline_alert',
  'payment.confirmed', 'payment.failed', 'webhook.test',
] as const);

// ---- Verification ----

export type WebhookVerificationReason =
  | 'missing_header'
  | 'invalid_timestamp'
  | 'timestamp_too_old'
  | 'timestamp_too_new'
  | 'no_matching_signature'
  | 'invalid_secret'
  | 'invalid_payload';

/** The request is not an authentic, fresh Fiscal Cloud webhook (answer 4xx; do not process it). */
export class WebhookVerificationError extends Error {
  override name = 'WebhookVerificationError';
  readonly reason: WebhookVerificationReason;
  constructor(reason: WebhookVerificationReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** A Headers instance, Node's `req.headers`, or any plain object of header names (any case) to values. */
export type WebhookHeaders =
  | Headers
  | Record<string, string | readonly string[] | undefined>;

/** The raw request body, exactly as received (not parsed JSON). */
export type WebhookBody = string | Uint8Array | ArrayBuffer;

export interface VerifyWebhookOptions {
  /** How far webhook-timestamp may be from `now`, either way (default 300 s, as the Standard Webhooks libraries). */
  toleranceSeconds?: number;
  /** The current time: a Date or milliseconds since the epoch (default Date.now()). */
  now?: Date | number;
  /** Web Crypto's SubtleCrypto (default globalThis.crypto.subtle; on Node 18 pass require('node:crypto').webcrypto.subtle). */
  subtle?: SubtleCrypto;
}

const SECRET_PREFIX = 'whsec_';
const TIMESTAMP = /^[0-9]{1,15}$/;
const encoder = new TextEncoder();

/**
 * Checks a webhook request and returns its parsed envelope.
 *
 * Throws (the promise rejects with) a WebhookVerificationError when a header is missing, the timestamp is
 * outside the tolerance, or no `v1` signature matches `secret` (compared in constant time). Pass the raw body:
 * a body parsed and serialized again is not the one that was signed.
 */
export async function verifyWebhook(
  headers: WebhookHeaders,
  body: WebhookBody,
  secret: string,
  options: VerifyWebhookOptions = {},
): Promise<WebhookEvent> {
  const bodyBytes = toBytes(body);
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  const missing = [['webhook-id', id], ['webhook-timestamp', timestamp], ['webhook-signature', signatures]]
    .filter(([, value]) => !value).map(([name]) => name);
  if (missing.length > 0) {
    throw new WebhookVerificationError('missing_header', `missing header${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`);
  }
  checkTimestamp(timestamp!, options);

  const subtle = options.subtle ?? globalThis.crypto?.subtle;
  if (!subtle) {
    throw new TypeError('Web Crypto is not available: use Node >= 20 or a browser, or pass { subtle }');
  }
  const key = await subtle.importKey('raw', secretKey(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const signedPrefix = encoder.encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(signedPrefix.length + bodyBytes.length);
  signed.set(signedPrefix, 0);
  signed.set(bodyBytes, signedPrefix.length);
  const expected = new Uint8Array(await subtle.sign('HMAC', key, signed));

  let matched = false;
  for (const candidate of signatures!.split(/\s+/)) {
    const comma = candidate.indexOf(',');
    if (comma < 0 || candidate.slice(0, comma) !== 'v1') continue; // other schemes (v1a...) are not ours
    const given = decodeBase64(candidate.slice(comma + 1));
    // No early exit: every candidate is compared, whichever matches.
    if (given !== null && constantTimeEqual(given, expected)) matched = true;
  }
  if (!matched) {
    throw new WebhookVerificationError('no_matching_signature', 'no matching signature: wrong secret, or the body or headers were changed');
  }

  let event: unknown;
  try {
    event = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bodyBytes));
  } catch {
    throw new WebhookVerificationError('invalid_payload', 'the signed body is not JSON');
  }
  if (typeof event !== 'object' || event === null || typeof (event as { type?: unknown }).type !== 'string') {
    throw new WebhookVerificationError('invalid_payload', 'the signed body is not a webhook envelope');
  }
  return event as WebhookEvent;
}

function checkTimestamp(value: string, options: VerifyWebhookOptions): void {
  if (!TIMESTAMP.test(value)) {
    throw new WebhookVerificationError('invalid_timestamp', `webhook-timestamp is not Unix seconds: ${JSON.stringify(value.slice(0, 40))}`);
  }
  const tolerance = options.toleranceSeconds ?? 300;
  const nowMs = options.now === undefined ? Date.now() : typeof options.now === 'number' ? options.now : options.now.getTime();
  const skew = Math.floor(nowMs / 1000) - Number(value);
  if (skew > tolerance) {
    throw new WebhookVerificationError('timestamp_too_old', `webhook-timestamp is ${skew} s old (tolerance ${tolerance} s): a replay, or a clock off`);
  }
  if (-skew > tolerance) {
    throw new WebhookVerificationError('timestamp_too_new', `webhook-timestamp is ${-skew} s in the future (tolerance ${tolerance} s): a clock off`);
  }
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function' && typeof (headers as Headers).has === 'function') {
    return (headers as Headers).get(name) ?? undefined; // case-insensitive by definition
  }
  for (const [key, value] of Object.entries(headers as Record<string, string | readonly string[] | undefined>)) {
    if (key.toLowerCase() !== name || value === undefined) continue;
    return typeof value === 'string' ? value : value.join(' ');
  }
  return undefined;
}

function toBytes(body: WebhookBody): Uint8Array {
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('verifyWebhook needs the raw body (a string, Uint8Array/Buffer or ArrayBuffer), not parsed JSON');
}

function secretKey(secret: string): Uint8Array<ArrayBuffer> {
  const encoded = typeof secret === 'string' && secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  const key = typeof encoded === 'string' ? decodeBase64(encoded) : null;
  if (key === null || key.length === 0) {
    throw new WebhookVerificationError('invalid_secret', 'the secret is not a whsec_ secret (whsec_ + base64)');
  }
  return key;
}

/** Standard base64 (padding optional); null when it is not base64. */
function decodeBase64(text: string): Uint8Array<ArrayBuffer> | null {
  const bare = text.replace(/=+$/, '');
  if (!/^[A-Za-z0-9+/]*$/.test(bare) || bare.length % 4 === 1) return null;
  const binary = atob(bare + '='.repeat((4 - (bare.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Equal bytes, in time that depends on the length only (the length of an HMAC is no secret). */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
