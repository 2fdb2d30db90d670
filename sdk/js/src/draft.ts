// Drafts: a sale (or refund) as the terminal keeps it from creation until the cloud has sealed it.

import {
  formatMinor, lineTotalMinor, minorUnits, normalizeAmount, normalizeQuantity, taxFromGross,
} from './decimal.js';
import { ValidationError } from './errors.js';
import type {
  Buyer, CreateCreditNoteRequest, Invoice, InvoiceLine, PaymentLine, SealInvoiceRequest, TaxGroup, TaxTotal,
} from './types.js';

export type DraftState = 'pending' | 'sealed' | 'rejected';
export type DraftKind = 'invoice' | 'credit_note';

/** Totals computed by the terminal with the server's rounding rules (for the provisional slip). */
export interface ProvisionalTotals {
  currency: string;
  lines: InvoiceLine[];
  tax_totals: TaxTotal[];
  total_taxable: string;
  total_tax: string;
  total: string;
}

/** One entry of the durable queue. Its `request` is fixed at creation and replayed byte for byte. */
export interface DraftRecord {
  v: 1;
  client_invoice_id: string;
  /** Creation order within the terminal's queue (replay order). */
  seq: number;
  kind: DraftKind;
  state: DraftState;
  /** When the terminal created the draft (its clock), RFC 3339. Equals request.sold_at for sales. */
  created_at: string;
  outlet_id: string;
  pos_terminal_id: string;
  cashier_id: string;
  request: SealInvoiceRequest | CreateCreditNoteRequest;
  /** Credit notes: the original invoice's server id, when known at creation. */
  original_invoice_id?: string;
  /** Credit notes: the client id of an original sale still in this queue; resolved at replay. */
  original_client_invoice_id?: string;
  provisional: ProvisionalTotals;
  attempts: number;
  last_attempt_at?: string;
  last_error?: string;
  rejected_at?: string;
  reject_reason?: string;
  reject_status?: number;
  reject_code?: number;
  /** When the terminal learnt of the seal (its clock). */
  confirmed_at?: string;
  invoice?: Invoice;
}

/** A sale as the POS describes it. Prices are tax-inclusive; money and quantities decimal strings. */
export interface SaleInput {
  lines: Array<{
    description: string;
    quantity: string | number;
    unit_price: string | number;
    tax_group: string;
    sku?: string;
  }>;
  payments?: Array<{ method: string; amount: string | number; reference?: string }>;
  buyer?: Buyer;
  /** Defaults to the terminal's currency. */
  currency?: string;
}

export function normalizeLines(lines: SaleInput['lines'], currency: string, taxGroups: TaxGroup[] | undefined): InvoiceLine[] {
  if (!Array.isArray(lines) || lines.length === 0) throw new ValidationError('a sale needs at least one line');
  const known = taxGroups ? new Set(taxGroups.map((g) => g.code)) : undefined;
  return lines.map((l, i) => {
    const what = `lines[${i}]`;
    if (!l || typeof l !== 'object') throw new ValidationError(`${what}: not an object`);
    const description = String(l.description ?? '').trim();
    if (!description) throw new ValidationError(`${what}.description is required`);
    const tax_group = String(l.tax_group ?? '').trim();
    if (!tax_group) throw new ValidationError(`${what}.tax_group is required`);
    if (known && !known.has(tax_group)) throw new ValidationError(`${what}.tax_group "${tax_group}" is not a configured tax group`);
    const out: InvoiceLine = {
      description,
      quantity: normalizeQuantity(l.quantity, `${what}.quantity`),
      unit_price: normalizeAmount(l.unit_price, currency, `${what}.unit_price`),
      tax_group,
    };
    if (l.sku) out.sku = String(l.sku);
    return out;
  });
}

export function normalizePayments(payments: SaleInput['payments'], currency: string): PaymentLine[] | undefined {
  if (!payments || payments.length === 0) return undefined;
  return payments.map((p, i) => {
    if (!p.method) throw new ValidationError(`payments[${i}].method is required`);
    const out: PaymentLine = { method: String(p.method), amount: normalizeAmount(p.amount, currency, `payments[${i}].amount`) };
    if (p.reference) out.reference = String(p.reference);
    return out;
  });
}

/** Line totals and per-tax-group totals exactly as the server computes them. */
export function computeTotals(lines: InvoiceLine[], currency: string, taxGroups: TaxGroup[] | undefined): ProvisionalTotals {
  const groups = new Map<string, bigint>();
  const outLines = lines.map((l) => {
    const t = lineTotalMinor(l.quantity, l.unit_price, currency);
    groups.set(l.tax_group, (groups.get(l.tax_group) ?? 0n) + t);
    return { ...l, line_total: formatMinor(t, currency) };
  });
  const byCode = new Map((taxGroups ?? []).map((g) => [g.code, g]));
  let gross = 0n;
  let tax = 0n;
  const tax_totals: TaxTotal[] = [...groups.keys()].sort().map((code) => {
    const g = groups.get(code)!;
    const cfg = byCode.get(code);
    const rate = cfg ? String(cfg.rate ?? '') : '';
    const t = taxFromGross(g, rate);
    gross += g;
    tax += t;
    return {
      tax_group: code,
      label: cfg?.label ?? code,
      rate,
      taxable_amount: formatMinor(g - t, currency),
      tax_amount: formatMinor(t, currency),
      gross_amount: formatMinor(g, currency),
    };
  });
  return {
    currency,
    lines: outLines,
    tax_totals,
    total_taxable: formatMinor(gross - tax, currency),
    total_tax: formatMinor(tax, currency),
    total: formatMinor(gross, currency),
  };
}

export function checkCurrency(currency: string): string {
  const c = String(currency ?? '').trim().toUpperCase();
  if (!/^[A-Z]{3}$/.test(c)) throw new ValidationError(`currency "${currency}" is not an ISO 4217 code`);
  minorUnits(c);
  return c;
}

/** The public view of a draft handed to the POS (a copy; mutating it changes nothing). */
export interface Draft {
  client_invoice_id: string;
  seq: number;
  kind: DraftKind;
  state: DraftState;
  sold_at: string;
  created_at: string;
  outlet_id: string;
  pos_terminal_id: string;
  cashier_id: string;
  provisional: ProvisionalTotals;
  request: SealInvoiceRequest | CreateCreditNoteRequest;
  attempts: number;
  last_error?: string;
  reject_reason?: string;
  reject_status?: number;
  original_invoice_id?: string;
  original_client_invoice_id?: string;
  /** The sealed invoice, once the cloud sealed the draft. */
  invoice?: Invoice;
}

export function toDraft(r: DraftRecord): Draft {
  const d: Draft = {
    client_invoice_id: r.client_invoice_id,
    seq: r.seq,
    kind: r.kind,
    state: r.state,
    sold_at: (r.request as SealInvoiceRequest).sold_at ?? r.created_at,
    created_at: r.created_at,
    outlet_id: r.outlet_id,
    pos_terminal_id: r.pos_terminal_id,
    cashier_id: r.cashier_id,
    provisional: r.provisional,
    request: r.request,
    attempts: r.attempts,
  };
  if (r.last_error) d.last_error = r.last_error;
  if (r.reject_reason) d.reject_reason = r.reject_reason;
  if (r.reject_status !== undefined) d.reject_status = r.reject_status;
  if (r.original_invoice_id) d.original_invoice_id = r.original_invoice_id;
  if (r.original_client_invoice_id) d.original_client_invoice_id = r.original_client_invoice_id;
  if (r.invoice) d.invoice = r.invoice;
  return structuredClone(d);
}
