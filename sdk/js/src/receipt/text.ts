// Plain-text receipts for 58 mm (32 columns) and 80 mm (48 columns) paper or a screen.

import type { Draft } from '../draft.js';
import type { Invoice } from '../types.js';
import { layoutBlocks } from './layout.js';
import type { TextQrMode } from './layout.js';
import { buildReceiptModel, columnsFor } from './model.js';
import type { ReceiptOptions } from './model.js';

export interface TextReceiptOptions extends ReceiptOptions {
  /**
   * How the QR code appears: 'blocks' draws it with Unicode quadrant blocks (scannable on screen and on
   * printers with a Unicode font; falls back to the URL if it is too wide), 'url' prints the verification
   * URL, 'both' does both. Default 'blocks'.
   */
  qr?: TextQrMode;
  /** Columns, overriding the paper width. */
  columns?: number;
}

/** A sealed invoice as a fiscal receipt, or a draft as a provisional slip, in plain text. */
export function renderReceiptText(x: Invoice | Draft, opts: TextReceiptOptions = {}): string {
  const model = buildReceiptModel(x, opts);
  const cols = opts.columns ?? columnsFor(opts.width);
  return layoutBlocks(model.blocks, cols, { textQr: opts.qr ?? 'blocks' })
    .map((l) => l.text.replace(/\s+$/, ''))
    .join('\n') + '\n';
}
