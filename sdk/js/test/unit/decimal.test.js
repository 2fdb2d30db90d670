import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  computeTotals, minorUnits, normalizeAmount, normalizeQuantity, lineTotalMinor, taxFromGross, divRoundHalfUp, ValidationError,
} from '../../dist/index.js';

const GROUPS = [
  { code: 'A', label: 'VAT 16%', rate: '16' },
  { code: 'B', label: 'VAT 7.5%', rate: '7.5' },
  { code: 'C', label: 'Exempt', rate: '' },
  { code: 'Z', label: 'Zero', rate: '0' },
];

test('minor units per currency', () => {
  for (const c of ['KES', 'CDF', 'USD', 'EUR', 'NGN', 'GHS', 'ZAR', 'TZS', 'MAD', 'ETB']) assert.equal(minorUnits(c), 2, c);
  for (const c of ['XOF', 'XAF', 'UGX', 'RWF', 'BIF', 'GNF', 'KMF', 'DJF']) assert.equal(minorUnits(c), 0, c);
});

test('half-up division', () => {
  assert.equal(divRoundHalfUp(5n, 2n), 3n);
  assert.equal(divRoundHalfUp(4n, 2n), 2n);
  assert.equal(divRoundHalfUp(149n, 100n), 1n);
  assert.equal(divRoundHalfUp(150n, 100n), 2n);
  assert.equal(divRoundHalfUp(-150n, 100n), -2n);
});

test('amounts and quantities are validated and normalised', () => {
  assert.equal(normalizeAmount('100', 'KES'), '100.00');
  assert.equal(normalizeAmount('99.5', 'KES'), '99.50');
  assert.equal(normalizeAmount('1500', 'XOF'), '1500');
  assert.equal(normalizeAmount('1500.00', 'XOF'), '1500');
  assert.throws(() => normalizeAmount('1500.5', 'XOF'), ValidationError);
  assert.throws(() => normalizeAmount('1.005', 'KES'), ValidationError);
  assert.throws(() => normalizeAmount('-1', 'KES'), ValidationError);
  assert.throws(() => normalizeAmount('1e3', 'KES'), ValidationError);
  assert.equal(normalizeQuantity('2.500'), '2.5');
  assert.equal(normalizeQuantity(3), '3');
  assert.equal(normalizeQuantity('0.125'), '0.125');
  assert.throws(() => normalizeQuantity('0'), ValidationError);
  assert.throws(() => normalizeQuantity('1.0001'), ValidationError);
});

test('line totals round half-up per line', () => {
  assert.equal(lineTotalMinor('3', '33.33', 'KES'), 9999n);
  assert.equal(lineTotalMinor('0.333', '10.00', 'KES'), 333n); // 3.33
  assert.equal(lineTotalMinor('0.125', '0.20', 'KES'), 3n); // 0.025 -> 0.03
  assert.equal(lineTotalMinor('1.5', '333', 'XOF'), 500n); // 499.5 -> 500
  assert.equal(lineTotalMinor('0.5', '1', 'XOF'), 1n); // 0.5 -> 1
});

test('tax is extracted from the tax-inclusive gross, half-up', () => {
  assert.equal(taxFromGross(11600n, '16'), 1600n);
  assert.equal(taxFromGross(10000n, '16'), 1379n); // 13.793 -> 13.79
  assert.equal(taxFromGross(100n, '16'), 14n); // 0.1379 -> 0.14
  assert.equal(taxFromGross(10750n, '7.5'), 750n);
  assert.equal(taxFromGross(10000n, ''), 0n);
  assert.equal(taxFromGross(10000n, '0'), 0n);
  // 1 XOF at 18%: 0.1525 -> 0
  assert.equal(taxFromGross(1n, '18'), 0n);
  // 29 minor at 16%: 4.0 -> 4
  assert.equal(taxFromGross(29n, '16'), 4n);
});

test('computeTotals per tax group matches the server rules', () => {
  const t = computeTotals([
    { description: 'Soda', quantity: '2', unit_price: '100.00', tax_group: 'A' },
    { description: 'Bread', quantity: '1', unit_price: '55.00', tax_group: 'C' },
    { description: 'Sugar', quantity: '0.333', unit_price: '10.00', tax_group: 'A' },
    { description: 'Book', quantity: '1', unit_price: '107.50', tax_group: 'B' },
  ], 'KES', GROUPS);
  assert.deepEqual(t.lines.map((l) => l.line_total), ['200.00', '55.00', '3.33', '107.50']);
  assert.deepEqual(t.tax_totals.map((g) => [g.tax_group, g.gross_amount, g.tax_amount, g.taxable_amount]), [
    ['A', '203.33', '28.05', '175.28'], // 203.33*16/116 = 28.0455 -> 28.05
    ['B', '107.50', '7.50', '100.00'],
    ['C', '55.00', '0.00', '55.00'],
  ]);
  assert.equal(t.total, '365.83');
  assert.equal(t.total_tax, '35.55');
  assert.equal(t.total_taxable, '330.28');
});

test('zero-decimal currency totals', () => {
  const t = computeTotals([{ description: 'Riz', quantity: '3', unit_price: '1250', tax_group: 'A' }], 'XOF', [{ code: 'A', rate: '18' }]);
  assert.equal(t.total, '3750');
  assert.equal(t.total_tax, '572'); // 3750*18/118 = 572.03
  assert.equal(t.total_taxable, '3178');
});
