// @fiscal-cloud/pos-sdk: the platform-neutral core (browsers and Node).
// Node adds FileQueueStore from "@fiscal-cloud/pos-sdk/node"; browsers add IndexedDbQueueStore from
// "@fiscal-cloud/pos-sdk/browser".

export { PosTerminal } from './terminal.js';
export type { TerminalOptions, TerminalStatus, TerminalEvents, BackoffOptions, SellOptions, RefundInput, PayInput } from './terminal.js';
export {
  PAYMENT_PROVIDERS, FINAL_PAYMENT_STATUSES, isPaymentSettled, normalizePhone, createPayment, getPayment, listPayments,
} from './payments.js';
export type { PayOptions } from './payments.js';
export { FiscalApi } from './http.js';
export type { ApiClientOptions, ApiResult, FetchLike } from './http.js';
export { ApiError, ValidationError, GrpcCode, classifyFailure } from './errors.js';
export type { FailureAction } from './errors.js';
export { MemoryQueueStore } from './store.js';
export type { QueueStore } from './store.js';
export { computeTotals, toDraft } from './draft.js';
export type { Draft, DraftRecord, DraftState, DraftKind, SaleInput, ProvisionalTotals } from './draft.js';
export {
  minorUnits, normalizeAmount, normalizeQuantity, lineTotalMinor, taxFromGross, toMinor, formatMinor, divRoundHalfUp,
} from './decimal.js';
export { uuidv7, isUuidv7, uuidv7Time } from './uuid.js';
export { renderReceiptText } from './receipt/text.js';
export type { TextReceiptOptions } from './receipt/text.js';
export { renderReceiptEscPos, extractRasterImages, toPrinterBytes } from './receipt/escpos.js';
export type { EscPosOptions } from './receipt/escpos.js';
export { renderReceiptHtml } from './receipt/html.js';
export type { HtmlReceiptOptions } from './receipt/html.js';
export { buildReceiptModel, formatLocal, NOT_FISCAL } from './receipt/model.js';
export type { ReceiptHeader, ReceiptOptions, ReceiptModel, Block } from './receipt/model.js';
export { qrMatrix, qrToSvg, qrToRaster, qrToQuadrantLines, quadrantLinesToGrid } from './receipt/qr.js';
export type { QrMatrix } from './receipt/qr.js';
export { SDK_VERSION } from './version.js';
export type * from './types.js';
export { verifyWebhook, WebhookVerificationError, WEBHOOK_EVENT_TYPES } from './webhooks.js';
export type {
  WebhookEvent, WebhookEventType, WebhookEnvelope, WebhookHeaders, WebhookBody, VerifyWebhookOptions,
  WebhookVerificationReason, MobileMoneyProvider,
  InvoiceSealedEvent, InvoiceSealedData, InvoiceSyncSuccessEvent, InvoiceSyncSuccessData,
  InvoiceSyncFailedEvent, InvoiceSyncFailedData, ReportGeneratedEvent, ReportGeneratedData,
  OutletOfflineAlertEvent, OutletOfflineAlertData, PaymentConfirmedEvent, PaymentConfirmedData,
  PaymentFailedEvent, PaymentFailedData, WebhookTestEvent, WebhookTestData,
} from './webhooks.js';
