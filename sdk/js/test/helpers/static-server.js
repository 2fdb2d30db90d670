// Serves the SDK's dist/ and its browser dependency to a test page (no bundler: an import map).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { sdkDir } from './stack.js';

const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html', '.map': 'application/json', '.json': 'application/json' };

export const PAGE = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Fiscal POS SDK browser test</title>
<script type="importmap">{"imports":{"qrcode-generator":"/node_modules/qrcode-generator/dist/qrcode.mjs"}}</script>
<script type="module">
  import * as fiscal from '/dist/browser.js';
  window.fiscal = fiscal;
  window.fiscalReady = true;
</script></head><body><div id="receipt"></div></body></html>`;

/**
 * Serves the page, dist/ and qrcode-generator. With `upstream` (a base URL), it also forwards /v1/* and
 * /healthz there, so that the page can talk to the gateway from its own origin.
 */
export async function startStaticServer({ upstream } = {}) {
  const root = sdkDir();
  const allowed = [path.join(root, 'dist'), path.join(root, 'node_modules', 'qrcode-generator')];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (upstream && (url.pathname.startsWith('/v1/') || url.pathname === '/healthz')) {
      const u = new URL(upstream);
      const fwd = http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: { ...req.headers, host: u.host } }, (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      });
      fwd.on('error', () => {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 14, message: 'upstream unreachable', details: [] }));
      });
      req.pipe(fwd);
      return;
    }
    if (url.pathname === '/' || url.pathname === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(PAGE);
      return;
    }
    const file = path.join(root, path.normalize(decodeURIComponent(url.pathname)));
    if (!allowed.some((a) => file.startsWith(a + path.sep)) || !fs.existsSync(file)) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((r) => {
      server.closeAllConnections?.();
      server.close(() => r());
    }),
  };
}
