// Lays receipt blocks out as fixed-width text lines (used by the text and ESC/POS renderers).

import type { Block } from './model.js';
import { qrMatrix, qrQuadrantWidth, qrToQuadrantLines } from './qr.js';

/** Length in columns (code points; the receipt's characters are all single-width). */
export function width(s: string): number {
  return [...s].length;
}

function padStart(s: string, n: number): string {
  const w = width(s);
  return w >= n ? s : ' '.repeat(n - w) + s;
}

function padEnd(s: string, n: number): string {
  const w = width(s);
  return w >= n ? s : s + ' '.repeat(n - w);
}

/** Word-wraps `text` to `cols`, breaking words longer than a line. */
export function wrap(text: string, cols: number): string[] {
  const out: string[] = [];
  for (const para of String(text).split('\n')) {
    let line = '';
    for (const word0 of para.split(/\s+/).filter((w) => w.length > 0)) {
      let word = word0;
      while (width(word) > cols) {
        if (line) {
          out.push(line);
          line = '';
        }
        const chars = [...word];
        out.push(chars.slice(0, cols).join(''));
        word = chars.slice(cols).join('');
      }
      if (!word) continue;
      if (!line) line = word;
      else if (width(line) + 1 + width(word) <= cols) line += ' ' + word;
      else {
        out.push(line);
        line = word;
      }
    }
    out.push(line);
  }
  return out;
}

export function center(s: string, cols: number): string {
  const w = width(s);
  if (w >= cols) return s;
  const left = Math.floor((cols - w) / 2);
  return ' '.repeat(left) + s;
}

/** key ..... value on one line, or key then the value right-aligned below when they do not fit. */
export function keyValue(k: string, v: string, cols: number): string[] {
  if (width(k) + 1 + width(v) <= cols) return [padEnd(k, cols - width(v)) + v];
  const out = wrap(k, cols);
  for (const l of wrap(v, cols)) out.push(padStart(l, cols));
  return out;
}

export type TextQrMode = 'blocks' | 'url' | 'both';

export interface LaidLine {
  text: string;
  /** What produced the line, for renderers that style it (ESC/POS bold, centring...). */
  block: Block;
  /** The line is part of a QR drawing. */
  qr?: boolean;
  centered?: boolean;
}

/** The QR drawn with quadrant blocks, if it fits `cols` (ECC M, then L); undefined otherwise. */
export function qrBlockLines(data: string, cols: number): string[] | undefined {
  for (const ecc of ['M', 'L'] as const) {
    const m = qrMatrix(data, ecc);
    for (const quiet of [2, 1]) {
      if (qrQuadrantWidth(m, quiet) <= cols) return qrToQuadrantLines(m, quiet);
    }
  }
  return undefined;
}

export function layoutBlocks(blocks: Block[], cols: number, opts: { textQr?: TextQrMode; qrAsText?: boolean } = {}): LaidLine[] {
  const out: LaidLine[] = [];
  const mode = opts.textQr ?? 'blocks';
  for (const b of blocks) {
    switch (b.t) {
      case 'center':
        for (const l of wrap(b.text, b.big ? Math.max(8, Math.floor(cols / 2)) : cols)) out.push({ text: center(l, cols), block: b, centered: true });
        break;
      case 'text':
        for (const l of wrap(b.text, cols)) out.push({ text: l, block: b });
        break;
      case 'kv':
        for (const l of keyValue(b.k, b.v, cols)) out.push({ text: l, block: b });
        break;
      case 'rule':
        out.push({ text: (b.ch ?? '-').repeat(cols), block: b });
        break;
      case 'item': {
        const desc = wrap(b.desc, cols);
        for (const l of desc) out.push({ text: l, block: b });
        for (const l of keyValue(b.detail, b.amount, cols)) out.push({ text: l, block: b });
        break;
      }
      case 'qr': {
        if (opts.qrAsText === false) {
          out.push({ text: '', block: b, qr: true });
        } else {
          const lines = mode === 'url' ? undefined : qrBlockLines(b.data, cols);
          if (lines) {
            const pad = Math.floor((cols - width(lines[0]!)) / 2);
            for (const l of lines) out.push({ text: ' '.repeat(pad) + l, block: b, qr: true });
          }
          if (!lines || mode === 'both' || mode === 'url') {
            out.push({ text: 'Verify:', block: b });
            for (let i = 0; i < b.data.length; i += cols) out.push({ text: b.data.slice(i, i + cols), block: b });
          }
        }
        if (b.caption) for (const l of wrap(b.caption, cols)) out.push({ text: center(l, cols), block: b, centered: true });
        break;
      }
      case 'banner': {
        const stars = '*'.repeat(cols);
        out.push({ text: stars, block: b });
        for (const line of b.lines) {
          for (const l of wrap(line, cols - 4)) {
            const inner = center(l, cols - 4);
            out.push({ text: `* ${padEnd(inner, cols - 4)} *`, block: b });
          }
        }
        out.push({ text: stars, block: b });
        break;
      }
      case 'feed':
        out.push({ text: '', block: b });
        break;
    }
  }
  return out;
}
