// The public REST contract's JSON shapes (proto field names in snake_case; money as decimal strings).

export interface InvoiceLine {
  description: string;
  quantity: string;
  unit_price: string;
  tax_group: string;
  line_total?: string;
  sku?: string;
}

export interface PaymentLine {
  /** cash, card, mpesa, airtel_money, orange_money, bank_transfer, other */
  method: string;
  amount: string;
  reference?: string;
  /** Output only: set on mobile-money payments recorded after the sale (not part of the signed body). */
  payment_id?: string;
  /** Output only: confirmed, failed, cancelled, expired (recorded payments). */
  status?: string;
  phone_masked?: string;
  confirmed_at?: string;
  /** Output only: the provider confirmed another amount than the one asked (flagged, shown as paid so). */
  amount_mismatch?: boolean;
}

export interface Buyer {
  name?: string;
  tax_id?: string;
  phone?: string;
  email?: string;
}

export interface TaxTotal {
  tax_group: string;
  label?: string;
  /** Percent as a decimal string; empty for an exempt group. */
  rate?: string;
  taxable_amount: string;
  tax_amount: string;
  gross_amount: string;
}

export interface FiscalBlock {
  fiscal_number: string;
  outlet_code?: string;
  series?: string;
  counter?: string | number;
  fiscal_authority_id: string;
  auth_code: string;
  sealed_at: string;
  sealed_at_local?: string;
  qr_code: string;
  signature?: string;
  key_id?: string;
  body_digest?: string;
  prev_hash?: string;
  hash?: string;
  taxpayer_id?: string;
  time_zone?: string;
}

export interface Invoice {
  id: string;
  merchant_id?: string;
  outlet_id: string;
  client_invoice_id: string;
  pos_terminal_id?: string;
  cashier_id?: string;
  /** "invoice" or "credit_note" */
  kind?: string;
  status?: string;
  currency: string;
  lines: InvoiceLine[];
  tax_totals?: TaxTotal[];
  total_taxable?: string;
  total_tax?: string;
  total: string;
  payments?: PaymentLine[];
  payment_status?: string;
  buyer?: Buyer;
  sold_at?: string;
  original_invoice_id?: string;
  reason?: string;
  fiscal?: FiscalBlock;
  created_at?: string;
}

export interface SealInvoiceRequest {
  outlet_id: string;
  client_invoice_id: string;
  pos_terminal_id: string;
  cashier_id: string;
  currency: string;
  lines: InvoiceLine[];
  payments?: PaymentLine[];
  buyer?: Buyer;
  sold_at?: string;
}

export interface CreateCreditNoteRequest {
  /** The original invoice's id (path parameter). */
  id?: string;
  client_invoice_id: string;
  pos_terminal_id: string;
  cashier_id: string;
  reason?: string;
  lines?: InvoiceLine[];
}

export interface ListInvoicesQuery {
  outlet_id?: string;
  pos_terminal_id?: string;
  cashier_id?: string;
  from?: string;
  to?: string;
  status?: string;
  kind?: string;
  page_size?: number;
  page_token?: string;
}

export interface ListInvoicesResponse {
  invoices: Invoice[];
  next_page_token?: string;
}

export interface Jwk {
  kid: string; kty: string; crv?: string; x?: string; y?: string; alg?: string; use?: string;
  status?: string; created_at?: string; retired_at?: string;
}

export interface KeySet { keys: Jwk[]; fiscal_authority_id?: string }

export interface VerifyReceiptResponse {
  valid: boolean;
  reason?: string;
  fiscal_number?: string;
  fiscal_authority_id?: string;
  sealed_at?: string;
  total?: string;
  currency?: string;
  auth_code?: string;
  key_id?: string;
  registered?: boolean;
  outlet_name?: string;
  taxpayer_id?: string;
}

export type TerminalState = 'online' | 'offline' | 'syncing';

export interface HeartbeatRequest {
  pos_terminal_id?: string;
  outlet_id: string;
  cashier_id?: string;
  draft_count: number;
  oldest_draft_age_seconds: number;
  rejected_count: number;
  sdk_version: string;
  state: TerminalState;
}

export interface HeartbeatResponse {
  server_time?: string;
  offline_grace_seconds?: string | number;
}

export interface TerminalInfo {
  pos_terminal_id: string;
  outlet_id: string;
  last_cashier_id?: string;
  first_seen_at?: string;
  last_seen_at?: string;
  last_heartbeat_at?: string;
  draft_count?: number;
  oldest_draft_age_seconds?: string | number;
  state?: string;
  sdk_version?: string;
  last_seal_at?: string;
}

/** A tax group of the merchant, as configured on the terminal (rate "" = exempt). */
export interface TaxGroup {
  code: string;
  label?: string;
  rate: string;
}

// ------------------------------------------------------------------ mobile-money payments (docs/payments.md)

export type PaymentProvider = 'mpesa' | 'airtel_money' | 'orange_money';

/** pending until the provider answers; the others are final (a late confirmation may still turn a
 * failed or expired payment into confirmed: the money arrived). */
export type PaymentStatus = 'pending' | 'confirmed' | 'failed' | 'cancelled' | 'expired';

/** Pay-first sales: not_applicable (a payment for an invoice or a client_invoice_id), waiting (for the
 * confirmation), sealed, not_sealed (failed payment or amount mismatch), retrying (confirmed; sealing is
 * retried because the ledger was unavailable). */
export type PaymentSaleState = 'not_applicable' | 'waiting' | 'sealed' | 'not_sealed' | 'retrying';

export interface Payment {
  id: string;
  outlet_id: string;
  provider: PaymentProvider;
  /** Asked, in the currency's units ("1250.00"). */
  amount: string;
  currency: string;
  /** "2547******78": never the whole number. */
  phone_masked: string;
  status: PaymentStatus;
  /** The provider's words on a failure ("Request cancelled by user"). */
  status_reason?: string;
  /** The invoice it pays, once known. */
  invoice_id?: string;
  client_invoice_id?: string;
  client_payment_id?: string;
  /** The provider's receipt once confirmed (MpesaReceiptNumber, airtel_money_id, Orange txnid). */
  provider_reference?: string;
  provider_request_id?: string;
  /** What the provider says was paid. */
  confirmed_amount?: string;
  amount_mismatch?: boolean;
  /** Orange Money: the page the customer pays on (show it as a QR code). */
  payment_url?: string;
  sale_state?: PaymentSaleState;
  created_at?: string;
  updated_at?: string;
  confirmed_at?: string;
}

export interface CreatePaymentRequest {
  outlet_id: string;
  provider: PaymentProvider;
  amount: string;
  currency: string;
  /** E.164 digits without "+", e.g. "254712345678". */
  phone: string;
  /** Exactly one of invoice_id, client_invoice_id, sale. */
  invoice_id?: string;
  client_invoice_id?: string;
  /** Pay-first: the sale sealed when the provider confirms. */
  sale?: SealInvoiceRequest;
  /** Chosen once per payment: a retried call never pushes a second prompt to the phone. */
  client_payment_id: string;
}

export interface ListPaymentsQuery {
  invoice_id?: string;
  client_invoice_id?: string;
  outlet_id?: string;
  status?: PaymentStatus;
  page_size?: number;
  page_token?: string;
}

export interface ListPaymentsResponse {
  payments: Payment[];
  next_page_token?: string;
}
