// QR codes through qrcode-generator (Kazuhiko Arase's QR encoder, MIT, no dependencies, ESM + browser).

import qrcode from 'qrcode-generator';

export type QrErrorCorrection = 'L' | 'M' | 'Q' | 'H';

export interface QrMatrix {
  /** Modules per side (without quiet zone). */
  size: number;
  /** True for a dark module. */
  isDark(row: number, col: number): boolean;
  /** The encoded text. */
  text: string;
}

/** Encodes `text` (byte mode, UTF-8) with the smallest version that fits. */
export function qrMatrix(text: string, ecc: QrErrorCorrection = 'M'): QrMatrix {
  const qr = qrcode(0, ecc);
  qr.addData(utf8Latin1(text), 'Byte');
  qr.make();
  const size = qr.getModuleCount();
  return { size, isDark: (r, c) => qr.isDark(r, c), text };
}

/** qrcode-generator's byte mode takes one char per byte: pass UTF-8 bytes as Latin-1 chars. */
function utf8Latin1(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  const bytes = new TextEncoder().encode(s);
  let out = '';
  for (const b of bytes) out += String.fromCharCode(b);
  return out;
}

// Quadrant block characters: index bits TL=1, TR=2, BL=4, BR=8.
const QUADRANTS = [' ', '▘', '▝', '▀', '▖', '▌', '▞', '▛', '▗', '▚', '▐', '▜', '▄', '▙', '▟', '█'];

/**
 * Renders a QR matrix as text, 2x2 modules per character (Unicode quadrant blocks), with a quiet zone
 * of `quiet` modules. Dark modules are drawn as block ink. Returns the lines (all of equal length).
 */
export function qrToQuadrantLines(m: QrMatrix, quiet = 2): string[] {
  const n = m.size + 2 * quiet;
  const dark = (r: number, c: number): boolean => {
    const rr = r - quiet;
    const cc = c - quiet;
    return rr >= 0 && cc >= 0 && rr < m.size && cc < m.size && m.isDark(rr, cc);
  };
  const lines: string[] = [];
  for (let r = 0; r < n; r += 2) {
    let line = '';
    for (let c = 0; c < n; c += 2) {
      const idx = (dark(r, c) ? 1 : 0) | (dark(r, c + 1) ? 2 : 0) | (dark(r + 1, c) ? 4 : 0) | (dark(r + 1, c + 1) ? 8 : 0);
      line += QUADRANTS[idx];
    }
    lines.push(line);
  }
  return lines;
}

/** Width in characters of the quadrant rendering. */
export function qrQuadrantWidth(m: QrMatrix, quiet = 2): number {
  return Math.ceil((m.size + 2 * quiet) / 2);
}

/** Parses quadrant-block text back into a module grid (used to check a printed text QR). */
export function quadrantLinesToGrid(lines: string[]): boolean[][] {
  const grid: boolean[][] = [];
  for (const line of lines) {
    const top: boolean[] = [];
    const bottom: boolean[] = [];
    for (const ch of line) {
      const idx = QUADRANTS.indexOf(ch);
      const v = idx < 0 ? 0 : idx;
      top.push(!!(v & 1), !!(v & 2));
      bottom.push(!!(v & 4), !!(v & 8));
    }
    grid.push(top, bottom);
  }
  return grid;
}

/** An SVG drawing of the QR code (black on white, `scale` px per module, 4-module quiet zone). */
export function qrToSvg(m: QrMatrix, opts: { scale?: number; quiet?: number; title?: string } = {}): string {
  const scale = opts.scale ?? 4;
  const quiet = opts.quiet ?? 4;
  const n = m.size + 2 * quiet;
  let d = '';
  for (let r = 0; r < m.size; r++) {
    let c = 0;
    while (c < m.size) {
      if (!m.isDark(r, c)) {
        c++;
        continue;
      }
      let run = 1;
      while (c + run < m.size && m.isDark(r, c + run)) run++;
      d += `M${c + quiet} ${r + quiet}h${run}v1h-${run}z`;
      c += run;
    }
  }
  const px = n * scale;
  const title = opts.title ? `<title>${escapeXml(opts.title)}</title>` : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${px}" height="${px}" viewBox="0 0 ${n} ${n}" shape-rendering="crispEdges" role="img">${title}<rect width="${n}" height="${n}" fill="#fff"/><path d="${d}" fill="#000"/></svg>`;
}

/** A 1-bit raster (rows of bits, MSB first, 1 = black) for ESC/POS `GS v 0`. */
export function qrToRaster(m: QrMatrix, scale: number, quiet = 2): { widthDots: number; heightDots: number; bytesPerRow: number; data: Uint8Array } {
  const n = (m.size + 2 * quiet) * scale;
  const bytesPerRow = Math.ceil(n / 8);
  const data = new Uint8Array(bytesPerRow * n);
  for (let y = 0; y < n; y++) {
    const r = Math.floor(y / scale) - quiet;
    for (let x = 0; x < n; x++) {
      const c = Math.floor(x / scale) - quiet;
      if (r >= 0 && c >= 0 && r < m.size && c < m.size && m.isDark(r, c)) {
        data[y * bytesPerRow + (x >> 3)]! |= 0x80 >> (x & 7);
      }
    }
  }
  return { widthDots: n, heightDots: n, bytesPerRow, data };
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);
}
