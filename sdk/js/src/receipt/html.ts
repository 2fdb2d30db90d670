// HTML receipts (for screens, e-mail, and printing from a browser), self-contained with inline CSS and an SVG QR code.

import type { Draft } from '../draft.js';
import type { Invoice } from '../types.js';
import { buildReceiptModel, NOT_FISCAL } from './model.js';
import type { Block, ReceiptOptions } from './model.js';
import { escapeXml, qrMatrix, qrToSvg } from './qr.js';

export interface HtmlReceiptOptions extends ReceiptOptions {
  /** A whole HTML document (default) or only the receipt's <div>. */
  document?: boolean;
  /** Pixels per QR module (default 3). */
  qrScale?: number;
}

const esc = escapeXml;

const CSS = `.fiscal-receipt{font-family:ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px;line-height:1.35;color:#000;background:#fff;padding:8px;box-sizing:border-box}
.fiscal-receipt.w58{width:58mm}.fiscal-receipt.w80{width:80mm}
.fiscal-receipt .c{text-align:center}.fiscal-receipt .b{font-weight:700}.fiscal-receipt .big{font-size:1.4em}
.fiscal-receipt .kv{display:flex;justify-content:space-between;gap:8px}.fiscal-receipt .kv span:last-child{text-align:right;word-break:break-all}
.fiscal-receipt hr{border:0;border-top:1px dashed #000;margin:4px 0}.fiscal-receipt hr.double{border-top:3px double #000}
.fiscal-receipt .item .d{padding-left:1em}.fiscal-receipt .qr{text-align:center;margin:6px 0}.fiscal-receipt .qr svg{max-width:100%;height:auto}
.fiscal-receipt .banner{border:3px solid #000;text-align:center;font-weight:700;padding:4px;margin:4px 0;text-transform:uppercase}
.fiscal-receipt.provisional{background-image:repeating-linear-gradient(-45deg,#fff 0 18px,#f2f2f2 18px 36px)}
@media print{.fiscal-receipt{padding:0}}`;

function blockHtml(b: Block, qrScale: number): string {
  switch (b.t) {
    case 'center':
      return `<div class="c${b.bold ? ' b' : ''}${b.big ? ' big' : ''}">${esc(b.text)}</div>`;
    case 'text':
      return `<div${b.bold ? ' class="b"' : ''}>${esc(b.text)}</div>`;
    case 'kv':
      return `<div class="kv${b.bold ? ' b' : ''}"><span>${esc(b.k.trim())}</span><span>${esc(b.v)}</span></div>`;
    case 'rule':
      return b.ch === '=' ? '<hr class="double">' : '<hr>';
    case 'item':
      return `<div class="item"><div>${esc(b.desc)}</div><div class="kv d"><span>${esc(b.detail.trim())}</span><span>${esc(b.amount)}</span></div></div>`;
    case 'qr':
      return `<div class="qr" data-qr="${esc(b.data)}">${qrToSvg(qrMatrix(b.data, 'M'), { scale: qrScale, title: 'Verification QR code' })}${b.caption ? `<div class="c">${esc(b.caption)}</div>` : ''}</div>`;
    case 'banner':
      return `<div class="banner" role="note">${b.lines.map(esc).join('<br>')}</div>`;
    case 'feed':
      return '';
  }
}

/** A sealed invoice (fiscal receipt) or a draft (provisional slip) as HTML. */
export function renderReceiptHtml(x: Invoice | Draft, opts: HtmlReceiptOptions = {}): string {
  const model = buildReceiptModel(x, opts);
  const w = opts.width === 58 ? 'w58' : 'w80';
  const provisional = model.kind === 'provisional';
  const attrs = provisional ? ` data-fiscal="false" aria-label="${NOT_FISCAL}"` : ` data-fiscal="true" data-fiscal-number="${esc(model.security!.fiscalNumber)}"`;
  const body = model.blocks.map((b) => blockHtml(b, opts.qrScale ?? 3)).join('\n');
  const div = `<div class="fiscal-receipt ${w}${provisional ? ' provisional' : ''}"${attrs}>\n${body}\n</div>`;
  if (opts.document === false) return `<style>${CSS}</style>\n${div}`;
  const title = provisional ? `Provisional slip - ${NOT_FISCAL}` : `Fiscal receipt ${model.security!.fiscalNumber}`;
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${esc(title)}</title><style>${CSS}</style></head><body>\n${div}\n</body></html>\n`;
}
