// The receipt's content, independent of the output (text, ESC/POS, HTML).

import type { Draft } from '../draft.js';
import type { Invoice, InvoiceLine, PaymentLine, TaxTotal } from '../types.js';

export interface ReceiptHeader {
  merchantName?: string;
  outletName?: string;
  address?: string | string[];
  phone?: string;
  /** Printed when the invoice does not carry fiscal.taxpayer_id (provisional slips). */
  taxpayerId?: string;
  /** Lines printed at the bottom. */
  footer?: string | string[];
}

export interface ReceiptOptions {
  /** Paper width: 58 mm (32 columns) or 80 mm (48 columns). Default 80. */
  width?: 58 | 80;
  header?: ReceiptHeader;
  /** IANA time zone for local times when the invoice does not carry fiscal.time_zone (default: the device's). */
  timeZone?: string;
}

export type Block =
  | { t: 'center'; text: string; bold?: boolean; big?: boolean }
  | { t: 'text'; text: string; bold?: boolean }
  | { t: 'kv'; k: string; v: string; bold?: boolean }
  | { t: 'rule'; ch?: string }
  | { t: 'item'; desc: string; detail: string; amount: string }
  | { t: 'qr'; data: string; caption?: string }
  | { t: 'banner'; lines: string[] }
  | { t: 'feed' };

export interface ReceiptModel {
  kind: 'fiscal' | 'provisional';
  blocks: Block[];
  /** For a sealed invoice: the five security elements. */
  security?: {
    fiscalNumber: string;
    fiscalAuthorityId: string;
    authCode: string;
    sealedAt: string;
    sealedAtLocal: string;
    qr: string;
  };
}

export const NOT_FISCAL = 'NOT A FISCAL RECEIPT';

export function columnsFor(width: 58 | 80 | undefined): number {
  return width === 58 ? 32 : 48;
}

/** True if `x` is a sealed invoice (or a draft whose seal is known). */
export function sealedInvoiceOf(x: Invoice | Draft): Invoice | undefined {
  const inv = isDraft(x) ? x.invoice : x;
  return inv && inv.fiscal && inv.fiscal.fiscal_number ? inv : undefined;
}

export function isDraft(x: Invoice | Draft): x is Draft {
  return typeof (x as Draft).seq === 'number' && 'provisional' in (x as Draft);
}

/** "2025-11-23 14:05:12 +03:00" for an instant in a time zone. */
export function formatLocal(instant: string | undefined, timeZone: string | undefined): string {
  if (!instant) return '';
  const ms = Date.parse(instant);
  if (!Number.isFinite(ms)) return instant;
  let tz = timeZone;
  try {
    if (tz) new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    tz = undefined;
  }
  try {
    const parts = new Intl.DateTimeFormat('en-US', {
      timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
    }).formatToParts(new Date(ms));
    const get = (type: string): string => parts.find((p) => p.type === type)?.value ?? '00';
    const y = get('year');
    const mo = get('month');
    const d = get('day');
    const h = get('hour') === '24' ? '00' : get('hour');
    const mi = get('minute');
    const s = get('second');
    const wall = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
    const offMin = Math.round((wall - Math.floor(ms / 1000) * 1000) / 60000);
    const sign = offMin < 0 ? '-' : '+';
    const a = Math.abs(offMin);
    const off = `${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
    return `${y}-${mo}-${d} ${h}:${mi}:${s} ${off}`;
  } catch {
    return new Date(ms).toISOString();
  }
}

/** sealed_at_local as printed: "2025-11-23 14:05:12 +03:00" (the server's local ISO string, tidied). */
function tidyLocal(s: string | undefined): string {
  if (!s) return '';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.exec(s);
  if (!m) return s;
  const off = !m[3] ? '' : m[3] === 'Z' ? ' +00:00' : ` ${m[3]}`;
  return `${m[1]} ${m[2]}${off}`;
}

function asList(v: string | string[] | undefined): string[] {
  if (!v) return [];
  return Array.isArray(v) ? v : [v];
}

function rateText(t: TaxTotal): string {
  if (t.rate === undefined || t.rate === null || t.rate === '') return 'exempt';
  return `${String(t.rate).replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '')}%`;
}

function headerBlocks(h: ReceiptHeader | undefined, taxpayerId: string | undefined): Block[] {
  const b: Block[] = [];
  if (h?.merchantName) b.push({ t: 'center', text: h.merchantName, bold: true, big: true });
  if (h?.outletName) b.push({ t: 'center', text: h.outletName, bold: true });
  for (const a of asList(h?.address)) b.push({ t: 'center', text: a });
  if (h?.phone) b.push({ t: 'center', text: `Tel ${h.phone}` });
  const tin = taxpayerId || h?.taxpayerId;
  if (tin) b.push({ t: 'center', text: `TIN ${tin}` });
  return b;
}

function lineBlocks(lines: InvoiceLine[], currency: string): Block[] {
  void currency;
  return lines.map((l) => ({
    t: 'item' as const,
    desc: `${l.description}${l.tax_group ? ` [${l.tax_group}]` : ''}`,
    detail: `  ${l.quantity} x ${l.unit_price}`,
    amount: l.line_total ?? '',
  }));
}

function taxBlocks(taxTotals: TaxTotal[] | undefined, currency: string): Block[] {
  const b: Block[] = [];
  for (const t of taxTotals ?? []) {
    b.push({ t: 'text', text: `${t.tax_group} ${t.label && t.label !== t.tax_group ? t.label : ''} (${rateText(t)})`.replace(/\s+/g, ' ') });
    b.push({ t: 'kv', k: '  Taxable', v: `${t.taxable_amount}` });
    b.push({ t: 'kv', k: '  Tax', v: `${t.tax_amount}` });
  }
  void currency;
  return b;
}

function paymentBlocks(payments: PaymentLine[] | undefined): Block[] {
  if (!payments || payments.length === 0) return [];
  const b: Block[] = [{ t: 'text', text: 'Payments' }];
  for (const p of payments) b.push({ t: 'kv', k: `  ${p.method}${p.reference ? ` ${p.reference}` : ''}`, v: p.amount });
  return b;
}

/** The content of a sealed invoice's fiscal receipt. */
export function buildFiscalModel(inv: Invoice, opts: ReceiptOptions = {}): ReceiptModel {
  const f = inv.fiscal!;
  const tz = f.time_zone || opts.timeZone;
  const credit = inv.kind === 'credit_note';
  const sealedLocal = tidyLocal(f.sealed_at_local) || formatLocal(f.sealed_at, tz);
  const b: Block[] = [...headerBlocks(opts.header, f.taxpayer_id), { t: 'rule', ch: '=' }];
  b.push({ t: 'center', text: credit ? 'FISCAL CREDIT NOTE' : 'FISCAL INVOICE', bold: true });
  b.push({ t: 'kv', k: 'Fiscal No.', v: f.fiscal_number, bold: true });
  if (credit && inv.original_invoice_id) b.push({ t: 'kv', k: 'Refund of', v: inv.original_invoice_id });
  if (credit && inv.reason) b.push({ t: 'kv', k: 'Reason', v: inv.reason });
  if (inv.sold_at) b.push({ t: 'kv', k: 'Sold', v: formatLocal(inv.sold_at, tz) });
  if (inv.pos_terminal_id) b.push({ t: 'kv', k: 'Terminal', v: inv.pos_terminal_id });
  if (inv.cashier_id) b.push({ t: 'kv', k: 'Cashier', v: inv.cashier_id });
  if (inv.buyer?.name) b.push({ t: 'kv', k: 'Buyer', v: inv.buyer.name });
  if (inv.buyer?.tax_id) b.push({ t: 'kv', k: 'Buyer TIN', v: inv.buyer.tax_id });
  b.push({ t: 'rule' });
  b.push(...lineBlocks(inv.lines ?? [], inv.currency));
  b.push({ t: 'rule' });
  b.push({ t: 'kv', k: `TOTAL ${inv.currency}`, v: inv.total, bold: true });
  b.push(...taxBlocks(inv.tax_totals, inv.currency));
  if (inv.total_tax) b.push({ t: 'kv', k: 'Total tax', v: inv.total_tax });
  b.push(...paymentBlocks(inv.payments));
  b.push({ t: 'rule', ch: '=' });
  b.push({ t: 'kv', k: 'Fiscal number', v: f.fiscal_number });
  b.push({ t: 'kv', k: 'Fiscal authority', v: f.fiscal_authority_id });
  b.push({ t: 'kv', k: 'Auth code', v: f.auth_code, bold: true });
  b.push({ t: 'kv', k: 'Sealed (UTC)', v: f.sealed_at });
  if (sealedLocal) b.push({ t: 'kv', k: 'Sealed (local)', v: sealedLocal });
  b.push({ t: 'qr', data: f.qr_code, caption: 'Scan to verify this receipt' });
  for (const l of asList(opts.header?.footer)) b.push({ t: 'center', text: l });
  b.push({ t: 'feed' });
  return {
    kind: 'fiscal',
    blocks: b,
    security: {
      fiscalNumber: f.fiscal_number,
      fiscalAuthorityId: f.fiscal_authority_id,
      authCode: f.auth_code,
      sealedAt: f.sealed_at,
      sealedAtLocal: sealedLocal,
      qr: f.qr_code,
    },
  };
}

/** The content of a provisional slip for a draft not sealed (yet): clearly not a fiscal receipt. */
export function buildProvisionalModel(d: Draft, opts: ReceiptOptions = {}): ReceiptModel {
  const p = d.provisional;
  const rejected = d.state === 'rejected';
  const credit = d.kind === 'credit_note';
  const banner = [
    rejected ? 'REJECTED SALE' : credit ? 'PROVISIONAL REFUND SLIP' : 'PROVISIONAL SLIP',
    NOT_FISCAL,
  ];
  const b: Block[] = [...headerBlocks(opts.header, undefined)];
  b.push({ t: 'banner', lines: banner });
  b.push({ t: 'kv', k: 'Draft', v: d.client_invoice_id });
  b.push({ t: 'kv', k: 'Sold', v: formatLocal(d.sold_at, opts.timeZone) });
  b.push({ t: 'kv', k: 'Terminal', v: d.pos_terminal_id });
  b.push({ t: 'kv', k: 'Cashier', v: d.cashier_id });
  if (credit && (d.original_invoice_id || d.original_client_invoice_id)) {
    b.push({ t: 'kv', k: 'Refund of', v: d.original_invoice_id ?? d.original_client_invoice_id ?? '' });
  }
  const req = d.request as { buyer?: { name?: string; tax_id?: string }; payments?: PaymentLine[]; reason?: string };
  if (credit && req.reason) b.push({ t: 'kv', k: 'Reason', v: req.reason });
  if (req.buyer?.name) b.push({ t: 'kv', k: 'Buyer', v: req.buyer.name });
  if (req.buyer?.tax_id) b.push({ t: 'kv', k: 'Buyer TIN', v: req.buyer.tax_id });
  b.push({ t: 'rule' });
  b.push(...lineBlocks(p.lines, p.currency));
  b.push({ t: 'rule' });
  if (p.total) b.push({ t: 'kv', k: `TOTAL ${p.currency}`, v: p.total, bold: true });
  b.push(...taxBlocks(p.tax_totals, p.currency));
  if (p.total_tax) b.push({ t: 'kv', k: 'Total tax', v: p.total_tax });
  b.push(...paymentBlocks(req.payments));
  b.push({ t: 'banner', lines: [NOT_FISCAL] });
  if (rejected) {
    b.push({ t: 'text', text: `Rejected by the fiscal cloud: ${d.reject_reason ?? ''}` });
  } else {
    b.push({ t: 'text', text: 'This sale is recorded on the terminal and will be sealed when the terminal is back online. Ask for your fiscal receipt.' });
  }
  for (const l of asList(opts.header?.footer)) b.push({ t: 'center', text: l });
  b.push({ t: 'feed' });
  return { kind: 'provisional', blocks: b };
}

/** The model for an invoice or a draft (sealed drafts print their fiscal receipt). */
export function buildReceiptModel(x: Invoice | Draft, opts: ReceiptOptions = {}): ReceiptModel {
  const inv = sealedInvoiceOf(x);
  if (inv) return buildFiscalModel(inv, opts);
  if (isDraft(x)) return buildProvisionalModel(x, opts);
  throw new TypeError('not a sealed invoice (no fiscal block) and not a draft');
}
