// Finds (or starts) the real Fiscal Cloud stack for the integration tests.
//
// - FISCAL_GATEWAY_URL + FISCAL_DEMO_JSON set: use that stack (its data dir is demo.json's directory,
//   or FISCAL_DATA_DIR), never stop it.
// - Otherwise spawn `fiscal up --data-dir <tmp> --port <free port>` (the binary from FISCAL_BIN, default
//   ../../.venv/bin/fiscal relative to sdk/js), wait for GET /healthz = 200, stop it with SIGTERM at the end.
// test/run.js starts one stack for all integration files and passes it on through those variables.
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function fiscalBin() {
  return process.env.FISCAL_BIN || path.resolve(SDK_DIR, '../../.venv/bin/fiscal');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function healthy(url) {
  try {
    const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
    await r.text();
    return r.status === 200;
  } catch {
    return false;
  }
}

export async function waitHealthy(url, timeoutMs = 240000, proc) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc && proc.exitCode !== null) throw new Error(`fiscal up exited with ${proc.exitCode}`);
    if (await healthy(url)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${url}/healthz did not answer 200 within ${timeoutMs} ms`);
}

/** Starts `fiscal up` in a temporary data dir. */
export async function startStack({ log = true } = {}) {
  const bin = fiscalBin();
  if (!fs.existsSync(bin)) throw new Error(`fiscal binary not found at ${bin} (set FISCAL_BIN, or FISCAL_GATEWAY_URL and FISCAL_DEMO_JSON)`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fiscal-sdk-it-'));
  const port = await freePort();
  const logFile = path.join(dataDir, 'fiscal-up.log');
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(bin, ['up', '--data-dir', dataDir, '--port', String(port)], {
    stdio: ['ignore', out, out],
    env: { ...process.env, COLUMNS: '200', NO_COLOR: '1' },
    detached: false,
  });
  fs.closeSync(out);
  const gatewayUrl = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  try {
    await waitHealthy(gatewayUrl, 240000, proc);
    const demoFile = path.join(dataDir, 'demo.json');
    const deadline = Date.now() + 60000;
    while (!fs.existsSync(demoFile) || !fs.existsSync(path.join(dataDir, 'stack.json'))) {
      if (Date.now() > deadline) throw new Error('demo.json was not written');
      if (proc.exitCode !== null) throw new Error(`fiscal up exited with ${proc.exitCode}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (e) {
    proc.kill('SIGTERM');
    const tail = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-3000) : '';
    throw new Error(`${e.message}\n--- fiscal up log (${logFile}) ---\n${tail}`);
  }
  if (log) process.stderr.write(`# started fiscal up on ${gatewayUrl} in ${((Date.now() - t0) / 1000).toFixed(1)} s (data dir ${dataDir})\n`);
  return {
    gatewayUrl,
    demoFile: path.join(dataDir, 'demo.json'),
    dataDir,
    owned: true,
    async stop() {
      if (proc.exitCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 60000);
      await done;
      clearTimeout(timer);
      if (process.env.FISCAL_KEEP_DATA !== '1') fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let shared;

/** The stack for this test file: from the environment, or one started here (stopped by release()). */
export async function getStack() {
  if (shared) return shared;
  if (process.env.FISCAL_GATEWAY_URL && process.env.FISCAL_DEMO_JSON) {
    const demoFile = process.env.FISCAL_DEMO_JSON;
    shared = {
      gatewayUrl: process.env.FISCAL_GATEWAY_URL.replace(/\/+$/, ''),
      demoFile,
      dataDir: process.env.FISCAL_DATA_DIR || path.dirname(demoFile),
      owned: false,
      async stop() {},
    };
  } else {
    shared = await startStack();
  }
  shared.demo = JSON.parse(fs.readFileSync(shared.demoFile, 'utf8'));
  return shared;
}

export async function releaseStack() {
  if (shared?.owned) await shared.stop();
  shared = undefined;
}

/**
 * A fresh merchant (its own outlets, terminals, cashiers and keys) so that each test's numbering starts at 1:
 * `fiscal merchant create` against the stack's database (`taxGroups`: `[{code, label, rate}]` instead of the
 * default four).
 */
export async function createMerchant(stack, { outlets = 1, terminals = 2, cashiers = 2, name = 'SDK QA', currency = 'KES', taxGroups } = {}) {
  const prefix = `Q${Math.random().toString(36).slice(2, 7).toUpperCase().replace(/[^A-Z0-9]/g, 'X')}`;
  const args = ['merchant', 'create', '--data-dir', stack.dataDir, '--name', `${name} ${prefix}`, '--code-prefix', prefix,
    '--outlets', String(outlets), '--terminals', String(terminals), '--cashiers', String(cashiers), '--currency', currency,
    '--gateway', stack.gatewayUrl, ...(taxGroups ?? []).flatMap((g) => ['--tax-group', taxGroupOption(g)])];
  const stdout = await runFiscal(args);
  const m = JSON.parse(stdout.slice(stdout.indexOf('{')));
  m.gateway_url = stack.gatewayUrl;
  return m;
}

/** `fiscal <args>` (FISCAL_BIN) against the stack's data dir; resolves with its stdout. */
function runFiscal(args) {
  const bin = fiscalBin();
  return new Promise((resolve, reject) => {
    execFile(bin, args, { maxBuffer: 16 << 20, timeout: 120000 }, (err, out, errOut) => {
      if (err) reject(new Error(`fiscal ${args.join(' ')} failed: ${err.message}\n${errOut}`));
      else resolve(out);
    });
  });
}

/** `{code, label, rate}` (rate '' or null = exempt) as the CLI's CODE:RATE:LABEL. */
function taxGroupOption(g) {
  return `${g.code}:${g.rate === '' || g.rate == null ? 'exempt' : g.rate}:${g.label}`;
}

/**
 * Adds (or updates) tax groups (`[{code, label, rate}]`, rate '' = exempt) of a merchant made by createMerchant,
 * with `fiscal tax-group set`. Returns the merchant with `tax_groups` = all of its groups, as the ledger has them.
 */
export async function addTaxGroups(stack, merchant, groups) {
  const args = ['tax-group', 'set', '--data-dir', stack.dataDir, '--merchant-id', merchant.merchant.id,
    ...groups.flatMap((g) => ['--tax-group', taxGroupOption(g)])];
  merchant.tax_groups = JSON.parse(await runFiscal(args));
  return merchant;
}

/** Every invoice of an outlet (admin key), following the pages. */
export async function ledgerInvoices(gatewayUrl, key, query) {
  const out = [];
  let token = '';
  for (;;) {
    const q = new URLSearchParams({ ...query, page_size: '500' });
    if (token) q.set('page_token', token);
    const r = await fetch(`${gatewayUrl}/v1/invoices?${q}`, { headers: { Authorization: `Bearer ${key}` } });
    const body = await r.json();
    if (!r.ok) throw new Error(`list invoices: HTTP ${r.status} ${JSON.stringify(body)}`);
    out.push(...(body.invoices ?? []));
    if (!body.next_page_token) return out;
    token = body.next_page_token;
  }
}

/** Asserts helpers shared by the integration tests. Returns problems as strings (empty = fine). */
export function gaplessProblems(invoices, label) {
  const problems = [];
  const bySeries = new Map();
  for (const inv of invoices) {
    const s = inv.fiscal.series;
    if (!bySeries.has(s)) bySeries.set(s, []);
    bySeries.get(s).push(Number(inv.fiscal.counter));
  }
  for (const [series, nums] of bySeries) {
    nums.sort((a, b) => a - b);
    for (let i = 0; i < nums.length; i++) {
      if (nums[i] !== i + 1) {
        problems.push(`${label} series ${series}: expected number ${i + 1}, found ${nums[i]} (${nums.length} invoices)`);
        break;
      }
    }
  }
  return problems;
}

/** A temporary directory removed when the process exits (unless FISCAL_KEEP_DATA=1). */
export function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (process.env.FISCAL_KEEP_DATA !== '1') process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function sdkDir() {
  return SDK_DIR;
}
