// Money and quantities as decimal strings, computed exactly with BigInt minor units.
//
// The server's rules (which the provisional slip must reproduce to the cent):
//   line_total = quantity x unit_price, rounded half-up to the currency's minor units, per line
//   per tax group: gross = sum of line totals
//                  tax   = gross x rate / (100 + rate), rounded half-up to minor units (0 when exempt)
//                  taxable = gross - tax
// unit_price is tax-inclusive.

import { ValidationError } from './errors.js';

/** Currencies without minor units (ISO 4217 exponent 0) among those the platform serves. */
const ZERO_DECIMAL = new Set(['XOF', 'XAF', 'UGX', 'RWF', 'BIF', 'GNF', 'KMF', 'DJF', 'JPY', 'KRW', 'VUV', 'XPF', 'PYG', 'CLP', 'ISK', 'VND']);
/** Three-decimal currencies (not used by the platform's markets today, kept exact anyway). */
const THREE_DECIMAL = new Set(['BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND']);

/** Number of minor-unit digits of an ISO 4217 currency (2 unless known otherwise). */
export function minorUnits(currency: string): number {
  const c = String(currency || '').toUpperCase();
  if (ZERO_DECIMAL.has(c)) return 0;
  if (THREE_DECIMAL.has(c)) return 3;
  return 2;
}

/** Maximum number of decimals of a quantity. */
export const QUANTITY_SCALE = 3;

const DECIMAL_RE = /^(\d+)(?:\.(\d+))?$/;

/**
 * Parses a non-negative decimal string to an integer scaled by 10^scale.
 * Refuses signs, exponents, spaces and more decimals than `scale` (unless they are trailing zeros).
 */
export function parseScaled(value: string | number, scale: number, what = 'value'): bigint {
  let s: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new ValidationError(`${what}: ${value} is not a non-negative number`);
    // Numbers are accepted for convenience but only if they print exactly as a short decimal.
    s = String(value);
    if (/e/i.test(s)) throw new ValidationError(`${what}: ${value} must be given as a decimal string`);
  } else if (typeof value === 'string') {
    s = value.trim();
  } else {
    throw new ValidationError(`${what}: expected a decimal string`);
  }
  const m = DECIMAL_RE.exec(s);
  if (!m) throw new ValidationError(`${what}: "${s}" is not a non-negative decimal`);
  const int = m[1]!;
  let frac = m[2] ?? '';
  if (frac.length > scale) {
    const extra = frac.slice(scale);
    if (/[^0]/.test(extra)) throw new ValidationError(`${what}: "${s}" has more than ${scale} decimals`);
    frac = frac.slice(0, scale);
  }
  return BigInt(int + frac.padEnd(scale, '0'));
}

/** Formats an integer scaled by 10^scale as a decimal string with exactly `scale` decimals. */
export function formatScaled(v: bigint, scale: number): string {
  const neg = v < 0n;
  const a = neg ? -v : v;
  if (scale === 0) return (neg ? '-' : '') + a.toString();
  const s = a.toString().padStart(scale + 1, '0');
  return (neg ? '-' : '') + s.slice(0, -scale) + '.' + s.slice(-scale);
}

/** Formats without trailing zeros in the fraction ("2.500" -> "2.5", "3.000" -> "3"). */
export function formatTrimmed(v: bigint, scale: number): string {
  const s = formatScaled(v, scale);
  if (!s.includes('.')) return s;
  return s.replace(/0+$/, '').replace(/\.$/, '');
}

/** Integer division rounding half away from zero (half-up for the non-negative amounts used here). */
export function divRoundHalfUp(num: bigint, den: bigint): bigint {
  if (den === 0n) throw new RangeError('division by zero');
  if (den < 0n) { num = -num; den = -den; }
  const neg = num < 0n;
  const a = neg ? -num : num;
  const q = (2n * a + den) / (2n * den);
  return neg ? -q : q;
}

export function toMinor(amount: string | number, currency: string, what = 'amount'): bigint {
  return parseScaled(amount, minorUnits(currency), what);
}

export function formatMinor(v: bigint, currency: string): string {
  return formatScaled(v, minorUnits(currency));
}

/** Canonical form of an amount in the currency ("100" -> "100.00" in KES, "1500" in XOF). */
export function normalizeAmount(amount: string | number, currency: string, what = 'amount'): string {
  return formatMinor(toMinor(amount, currency, what), currency);
}

/** Canonical form of a quantity (at most 3 decimals, trailing zeros dropped); must be > 0. */
export function normalizeQuantity(q: string | number, what = 'quantity'): string {
  const v = parseScaled(q, QUANTITY_SCALE, what);
  if (v <= 0n) throw new ValidationError(`${what}: must be greater than zero`);
  return formatTrimmed(v, QUANTITY_SCALE);
}

/** quantity x unit_price rounded half-up to the currency's minor units, in minor units. */
export function lineTotalMinor(quantity: string, unitPrice: string, currency: string): bigint {
  const q = parseScaled(quantity, QUANTITY_SCALE, 'quantity');
  const p = toMinor(unitPrice, currency, 'unit_price');
  return divRoundHalfUp(q * p, 10n ** BigInt(QUANTITY_SCALE));
}

/** Tax included in a tax-inclusive gross amount: gross x rate / (100 + rate), half-up. Empty rate = exempt. */
export function taxFromGross(grossMinor: bigint, rate: string | undefined | null): bigint {
  if (rate === undefined || rate === null || String(rate).trim() === '') return 0n;
  const r = String(rate).trim();
  const m = DECIMAL_RE.exec(r);
  if (!m) throw new ValidationError(`tax rate "${r}" is not a non-negative decimal`);
  const scale = (m[2] ?? '').length;
  const rUnits = BigInt(m[1]! + (m[2] ?? ''));
  if (rUnits === 0n) return 0n;
  const hundred = 100n * 10n ** BigInt(scale);
  return divRoundHalfUp(grossMinor * rUnits, hundred + rUnits);
}
