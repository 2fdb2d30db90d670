// Decodes QR codes out of the SDK's renderings with jsQR (tests only).
import jsQR from 'jsqr';
import { quadrantLinesToGrid, extractRasterImages } from '../../dist/index.js';

const QUAD = /[▘▝▀▖▌▞▛▗▚▐▜▄▙▟█]/;

/** Renders a module grid (true = dark) to RGBA with a quiet zone and decodes it. */
export function decodeGrid(grid, scale = 4, quiet = 4) {
  const h = grid.length;
  const w = Math.max(...grid.map((r) => r.length));
  const W = (w + 2 * quiet) * scale;
  const H = (h + 2 * quiet) * scale;
  const px = new Uint8ClampedArray(W * H * 4).fill(255);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      if (!grid[r][c]) continue;
      for (let dy = 0; dy < scale; dy++) {
        for (let dx = 0; dx < scale; dx++) {
          const i = (((r + quiet) * scale + dy) * W + (c + quiet) * scale + dx) * 4;
          px[i] = px[i + 1] = px[i + 2] = 0;
        }
      }
    }
  }
  const res = jsQR(px, W, H);
  return res ? res.data : undefined;
}

/** Finds the quadrant-block QR drawing in a text receipt and decodes it. */
export function decodeTextReceiptQr(text) {
  const lines = text.split('\n').filter((l) => QUAD.test(l));
  if (lines.length === 0) return undefined;
  const indent = Math.min(...lines.map((l) => l.length - l.trimStart().length));
  const width = Math.max(...lines.map((l) => l.length));
  const body = lines.map((l) => l.padEnd(width, ' ').slice(indent));
  return decodeGrid(quadrantLinesToGrid(body), 4, 4);
}

/** Finds the raster QR (GS v 0) in ESC/POS bytes and decodes it. */
export function decodeEscPosQr(bytes) {
  const [img] = extractRasterImages(bytes);
  if (!img) return undefined;
  const grid = [];
  for (let y = 0; y < img.heightDots; y++) {
    const row = [];
    for (let x = 0; x < img.widthDots; x++) row.push(!!(img.data[y * img.bytesPerRow + (x >> 3)] & (0x80 >> (x & 7))));
    grid.push(row);
  }
  return decodeGrid(grid, 1, 16);
}
