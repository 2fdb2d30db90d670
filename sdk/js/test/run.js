#!/usr/bin/env node
// npm test: the unit tests (fake gateway, fast), then the integration tests against the real stack.
//
//   node test/run.js                 unit + integration
//   node test/run.js --unit          unit only
//   node test/run.js --integration   integration only
//
// Integration tests use FISCAL_GATEWAY_URL + FISCAL_DEMO_JSON when set; otherwise this script starts one
// `fiscal up` (FISCAL_BIN, default ../../.venv/bin/fiscal) for all of them and stops it at the end.
// Without either, the integration tests FAIL (set FISCAL_SKIP_INTEGRATION=1 to skip them knowingly).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fiscalBin, startStack } from './helpers/stack.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const args = process.argv.slice(2);
const onlyUnit = args.includes('--unit');
const onlyIntegration = args.includes('--integration');

function listTests(dir) {
  return fs.readdirSync(path.join(here, dir)).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join('test', dir, f));
}

function runNodeTest(files, env = process.env) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=600000', ...files], { cwd: root, stdio: 'inherit', env });
    p.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) {
  console.error('# dist/ missing: building');
  const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

let failed = 0;
if (!onlyIntegration) {
  failed += (await runNodeTest(listTests('unit'))) === 0 ? 0 : 1;
}
if (!onlyUnit) {
  if (process.env.FISCAL_SKIP_INTEGRATION === '1') {
    console.error('# integration tests skipped (FISCAL_SKIP_INTEGRATION=1)');
  } else {
    let stack;
    const env = { ...process.env };
    if (!(env.FISCAL_GATEWAY_URL && env.FISCAL_DEMO_JSON)) {
      if (!fs.existsSync(fiscalBin())) {
        console.error(`# integration tests need the stack: no FISCAL_GATEWAY_URL/FISCAL_DEMO_JSON and no fiscal binary at ${fiscalBin()}`);
        process.exit(1);
      }
      stack = await startStack();
      env.FISCAL_GATEWAY_URL = stack.gatewayUrl;
      env.FISCAL_DEMO_JSON = stack.demoFile;
      env.FISCAL_DATA_DIR = stack.dataDir;
    }
    const stop = async () => {
      if (stack) await stack.stop();
    };
    process.on('SIGINT', () => void stop().then(() => process.exit(130)));
    process.on('SIGTERM', () => void stop().then(() => process.exit(143)));
    try {
      const files = listTests('integration').filter((f) => !process.env.FISCAL_IT_ONLY || f.includes(process.env.FISCAL_IT_ONLY));
      failed += (await runNodeTest(files, env)) === 0 ? 0 : 1;
    } finally {
      await stop();
    }
  }
}
process.exit(failed ? 1 : 0);
