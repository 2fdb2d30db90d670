// ESC/POS bytes for thermal receipt printers (Epson TM and the many compatible printers).

import type { Draft } from '../draft.js';
import type { Invoice } from '../types.js';
import { layoutBlocks } from './layout.js';
import { buildReceiptModel, columnsFor } from './model.js';
import type { ReceiptOptions } from './model.js';
import { qrMatrix, qrToRaster } from './qr.js';

export interface EscPosOptions extends ReceiptOptions {
  /**
   * 'raster' (default) prints the QR as a bitmap (GS v 0), which every ESC/POS printer understands;
   * 'native' sends it to the printer's own QR encoder (GS ( k), smaller and sharper on printers that have one.
   */
  qr?: 'raster' | 'native';
  /** Printable dots per line (default 384 for 58 mm, 576 for 80 mm). */
  dots?: number;
  /** Cut the paper at the end (default true). */
  cut?: boolean;
  /** Open the cash drawer (pulse on pin 2) before printing (default false). */
  openDrawer?: boolean;
}

const ESC = 0x1b;
const GS = 0x1d;
const LF = 0x0a;

class Bytes {
  private chunks: number[] = [];
  push(...b: number[]): this {
    for (const x of b) this.chunks.push(x & 0xff);
    return this;
  }
  bytes(a: Uint8Array | number[]): this {
    for (const x of a) this.chunks.push(x);
    return this;
  }
  text(s: string): this {
    return this.bytes(toPrinterBytes(s));
  }
  line(s: string): this {
    return this.text(s).push(LF);
  }
  build(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

const REPLACEMENTS: Record<string, string> = {
  '€': 'EUR', '£': 'GBP', '’': "'", '‘': "'", '“': '"', '”': '"', '–': '-', '—': '-', '…': '...', '•': '*', ' ': ' ', 'ß': 'ss', 'Æ': 'AE', 'æ': 'ae', 'Ø': 'O', 'ø': 'o', 'Œ': 'OE', 'œ': 'oe',
};

/** Text to printer bytes: ASCII kept, accents dropped (é -> e), anything else '?'. Code page PC437 is selected. */
export function toPrinterBytes(s: string): number[] {
  const out: number[] = [];
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    if (code >= 0x20 && code < 0x7f) {
      out.push(code);
      continue;
    }
    const rep = REPLACEMENTS[ch];
    if (rep !== undefined) {
      for (const c of rep) out.push(c.charCodeAt(0));
      continue;
    }
    const base = ch.normalize('NFD').replace(/[\u0300-\u036f]/g, '');
    if (base.length > 0 && [...base].every((c) => c.charCodeAt(0) >= 0x20 && c.charCodeAt(0) < 0x7f)) {
      for (const c of base) out.push(c.charCodeAt(0));
    } else {
      out.push(0x3f);
    }
  }
  return out;
}

/** A sealed invoice (fiscal receipt) or a draft (provisional slip) as ESC/POS bytes. */
export function renderReceiptEscPos(x: Invoice | Draft, opts: EscPosOptions = {}): Uint8Array {
  const model = buildReceiptModel(x, opts);
  const cols = columnsFor(opts.width);
  const dots = opts.dots ?? (opts.width === 58 ? 384 : 576);
  const out = new Bytes();
  out.push(ESC, 0x40); // initialise
  out.push(ESC, 0x74, 0x00); // code page PC437
  if (opts.openDrawer) out.push(ESC, 0x70, 0x00, 0x19, 0xfa);
  const laid = layoutBlocks(model.blocks, cols, { qrAsText: false });
  let lastQr: string | undefined;
  for (let i = 0; i < laid.length; i++) {
    const l = laid[i]!;
    const b = l.block;
    if (l.qr) {
      if (b.t === 'qr' && b.data !== lastQr) {
        lastQr = b.data;
        out.push(ESC, 0x61, 0x01); // centre
        if (opts.qr === 'native') nativeQr(out, b.data, dots);
        else rasterQr(out, b.data, dots);
        out.push(ESC, 0x61, 0x00);
      }
      continue;
    }
    const bold = (b.t === 'center' || b.t === 'text' || b.t === 'kv') && !!b.bold;
    const big = b.t === 'center' && !!b.big;
    const banner = b.t === 'banner';
    if (l.centered) out.push(ESC, 0x61, 0x01);
    if (bold || banner) out.push(ESC, 0x45, 0x01);
    if (big) {
      out.push(GS, 0x21, 0x11); // double width and height
      out.line(l.text.trim());
      out.push(GS, 0x21, 0x00);
    } else {
      out.line(l.centered ? l.text.trim() : l.text);
    }
    if (bold || banner) out.push(ESC, 0x45, 0x00);
    if (l.centered) out.push(ESC, 0x61, 0x00);
  }
  out.push(ESC, 0x64, 0x03); // feed 3 lines
  if (opts.cut !== false) out.push(GS, 0x56, 0x42, 0x00); // feed and partial cut
  return out.build();
}

function rasterQr(out: Bytes, data: string, dots: number): void {
  const m = qrMatrix(data, 'M');
  const quiet = 2;
  const scale = Math.max(1, Math.min(8, Math.floor((dots * 0.9) / (m.size + 2 * quiet))));
  const r = qrToRaster(m, scale, quiet);
  out.push(GS, 0x76, 0x30, 0x00, r.bytesPerRow & 0xff, r.bytesPerRow >> 8, r.heightDots & 0xff, r.heightDots >> 8);
  out.bytes(r.data);
  out.push(LF);
}

function nativeQr(out: Bytes, data: string, dots: number): void {
  const bytes = new TextEncoder().encode(data);
  const m = qrMatrix(data, 'M');
  const size = Math.max(1, Math.min(16, Math.floor((dots * 0.9) / (m.size + 8))));
  out.push(GS, 0x28, 0x6b, 0x04, 0x00, 0x31, 0x41, 0x32, 0x00); // model 2
  out.push(GS, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x43, size); // module size
  out.push(GS, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x45, 0x31); // error correction M
  const len = bytes.length + 3;
  out.push(GS, 0x28, 0x6b, len & 0xff, len >> 8, 0x31, 0x50, 0x30).bytes(bytes); // store
  out.push(GS, 0x28, 0x6b, 0x03, 0x00, 0x31, 0x51, 0x30); // print
  out.push(LF);
}

/** Finds the raster images (GS v 0) in ESC/POS bytes: for tests and print previews. */
export function extractRasterImages(bytes: Uint8Array): Array<{ widthDots: number; heightDots: number; bytesPerRow: number; data: Uint8Array }> {
  const found: Array<{ widthDots: number; heightDots: number; bytesPerRow: number; data: Uint8Array }> = [];
  for (let i = 0; i + 8 <= bytes.length; i++) {
    if (bytes[i] === GS && bytes[i + 1] === 0x76 && bytes[i + 2] === 0x30) {
      const bpr = bytes[i + 4]! | (bytes[i + 5]! << 8);
      const h = bytes[i + 6]! | (bytes[i + 7]! << 8);
      const data = bytes.slice(i + 8, i + 8 + bpr * h);
      found.push({ widthDots: bpr * 8, heightDots: h, bytesPerRow: bpr, data });
      i += 8 + bpr * h - 1;
    }
  }
  return found;
}
