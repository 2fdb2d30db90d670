// A Node POS process is killed with SIGKILL in the middle of a replay, several times; each restart resumes
// from its queue file; every draft is sealed exactly once, in order, numbers gapless.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMerchant, ledgerInvoices, gaplessProblems, tempDir } from '../helpers/stack.js';
import { proxiedStack } from '../helpers/proxy.js';

const CHILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/replay-child.js');
const COUNT = 300;
const KILLS = 4;

const ctx = proxiedStack();

/**
 * Runs the child. killAfterSeals: SIGKILL it a random 0-30 ms after its n-th seal (anywhere in the request
 * cycle). killOnLostAnswer: the proxy holds back the answer of the n-th seal request (the server has
 * committed it) and the child is killed while waiting for it.
 */
function runChild(config, { killAfterSeals, killOnLostAnswer } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CHILD], { env: { ...process.env, FISCAL_CHILD: JSON.stringify(config) }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let seals = 0;
    let killed = false;
    if (killOnLostAnswer !== undefined) {
      let n = 0;
      void ctx.proxy.setMode('lose-answers', {
        loseCount: 1, loseDelayMs: 10000,
        loseFilter: (req) => /^POST \/v1\/invoices HTTP/.test(req) && ++n >= killOnLostAnswer,
        onLose: () => {
          killed = true;
          p.kill('SIGKILL');
        },
      });
    }
    p.stdout.on('data', (chunk) => {
      out += chunk;
      if (killAfterSeals !== undefined && !killed) {
        seals = (out.match(/^sealed /gm) ?? []).length;
        if (seals >= killAfterSeals) {
          killed = true;
          setTimeout(() => p.kill('SIGKILL'), Math.floor(Math.random() * 30));
        }
      }
    });
    p.on('error', reject);
    p.on('exit', (code, signal) => resolve({ code, signal, out, killed }));
  });
}

test(`SIGKILL mid-replay (${KILLS} times): the restarted process resumes from its file without duplicates`, async () => {
  const m = await createMerchant(ctx.stack, { outlets: 1, terminals: 1 });
  const o = m.outlets[0];
  const dataDir = tempDir('fiscal-kill-');
  const base = {
    dataDir, apiKey: m.pos_keys[o.id], outletId: o.id, posTerminalId: m.terminals[o.id][0], cashierId: m.cashiers[o.id][0],
    currency: o.currency, taxGroups: m.tax_groups,
  };
  // Sales made while offline (nothing is sent in this mode).
  const sold = await runChild({ ...base, mode: 'sell', count: COUNT, gatewayUrl: 'http://127.0.0.1:9' });
  assert.equal(sold.code, 0);
  const ids = JSON.parse(sold.out.trim());
  assert.equal(ids.length, COUNT);
  const replay = { ...base, mode: 'replay', gatewayUrl: ctx.proxy.url };
  const sealedLines = new Set();
  let ahead = 0;
  let committedUnrecorded = 0;
  for (let k = 0; k < KILLS; k++) {
    const before = sealedLines.size;
    const atLostAnswer = k % 2 === 0;
    await ctx.proxy.setMode('pass');
    const r = await runChild(replay, atLostAnswer ? { killOnLostAnswer: 20 + k * 5 } : { killAfterSeals: 25 + k * 7 });
    await ctx.proxy.setMode('pass');
    assert.equal(r.signal, 'SIGKILL', `run ${k} was killed (exit ${r.code}): ${r.out.slice(-200)}`);
    const resumed = Number(/^resumed (\d+)/m.exec(r.out)?.[1]);
    assert.ok(resumed <= COUNT - sealedLines.size, 'the restart resumes with what is left (never more)');
    for (const l of r.out.split('\n')) if (l.startsWith('sealed ')) sealedLines.add(l.slice(7));
    // Committed on the server but not recorded by the killed process (the answer died with it)?
    const ledgerNow = await ledgerInvoices(ctx.stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
    ahead = Math.max(ahead, ledgerNow.length - sealedLines.size);
    if (atLostAnswer) {
      assert.equal(ledgerNow.length, sealedLines.size + 1, 'killed after the server committed, before the process learnt of it');
      committedUnrecorded++;
    }
    assert.ok(sealedLines.size > before, 'each run made progress');
  }
  const last = await runChild(replay);
  assert.equal(last.code, 0, last.out.slice(-300));
  assert.match(last.out, /drained/);
  const ledger = await ledgerInvoices(ctx.stack.gatewayUrl, m.admin_key, { outlet_id: o.id });
  assert.equal(ledger.length, COUNT, 'every draft sealed exactly once');
  assert.equal(new Set(ledger.map((i) => i.client_invoice_id)).size, COUNT);
  assert.deepEqual(gaplessProblems(ledger, o.code), []);
  const order = ledger.sort((a, b) => Number(a.fiscal.counter) - Number(b.fiscal.counter)).map((i) => i.client_invoice_id);
  assert.deepEqual(order, ids, 'sealed in creation order');
  process.stderr.write(`# sigkill: ${KILLS} kills (${committedUnrecorded} between the server's commit and the answer), ${COUNT} drafts sealed once each; ledger ahead of the process by up to ${ahead} at a kill\n`);
});
