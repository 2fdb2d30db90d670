// A loopback TCP proxy in front of the gateway that can simulate outages:
//   pass          forward everything
//   refuse        stop listening: connections are refused (ECONNREFUSED)
//   drop          accept, then reset the connection at once
//   blackhole     accept and read, never answer (the client times out)
//   lose-answers  forward requests, but when the upstream starts answering, wait `loseDelayMs`, then
//                 destroy both sides: the server committed, the client never gets the answer
//                 (bounded by `loseCount`, after which it passes; Infinity = always)
import net from 'node:net';
import { before, after } from 'node:test';
import { getStack, releaseStack } from './stack.js';

export class ChaosProxy {
  constructor({ upstreamHost = '127.0.0.1', upstreamPort, host = '127.0.0.1', port = 0 } = {}) {
    this.upstreamHost = upstreamHost;
    this.upstreamPort = upstreamPort;
    this.host = host;
    this.port = port;
    this.mode = 'pass';
    this.loseCount = Infinity;
    this.loseDelayMs = 50;
    this.lostAnswers = 0;
    this.connections = 0;
    this.refusedWhileDown = 0;
    this.sockets = new Set();
    this.server = undefined;
    this.loseFilter = undefined; // (firstRequestChunk: string) => boolean
  }

  get url() {
    return `http://${this.host}:${this.port}`;
  }

  async start() {
    await this.listen();
    return this;
  }

  listen() {
    if (this.server) return Promise.resolve();
    const server = net.createServer((client) => this.onConnection(client));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => {
        server.off('error', reject);
        this.port = server.address().port;
        resolve();
      });
    });
  }

  async unlisten() {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise((resolve) => s.close(() => resolve()));
  }

  killAll() {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  /** Changes the mode; existing connections are cut when going down. */
  async setMode(mode, opts = {}) {
    if (opts.loseCount !== undefined) this.loseCount = opts.loseCount;
    if (opts.loseDelayMs !== undefined) this.loseDelayMs = opts.loseDelayMs;
    if (opts.loseFilter !== undefined) this.loseFilter = opts.loseFilter;
    if (opts.onLose !== undefined) this.onLose = opts.onLose;
    this.mode = mode;
    if (mode !== 'pass') this.killAll();
    if (mode === 'refuse') await this.unlisten();
    else await this.listen();
  }

  onConnection(client) {
    this.connections++;
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => {});
    const mode = this.mode;
    if (mode === 'drop') {
      this.refusedWhileDown++;
      if (typeof client.resetAndDestroy === 'function') client.resetAndDestroy();
      else client.destroy();
      return;
    }
    if (mode === 'blackhole') {
      client.on('data', () => {});
      return;
    }
    const upstream = net.connect(this.upstreamPort, this.upstreamHost);
    this.sockets.add(upstream);
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      client.destroy();
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    // The current request's text (to decide, when its answer starts, whether to lose it).
    let awaiting = false;
    let request = '';
    let dropping = false;
    client.on('data', (chunk) => {
      if (!awaiting) {
        awaiting = true;
        request = '';
      }
      if (request.length < 65536) request += chunk.toString('utf8');
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (dropping) return;
      if (awaiting) {
        awaiting = false;
        if (this.mode === 'lose-answers' && this.loseCount > 0 && (!this.loseFilter || this.loseFilter(request))) {
          // The upstream answered (so it committed): lose the answer.
          dropping = true;
          this.loseCount--;
          this.lostAnswers++;
          if (this.onLose) this.onLose(request);
          upstream.pause();
          setTimeout(() => {
            upstream.destroy();
            client.destroy();
          }, this.loseDelayMs);
          return;
        }
      }
      client.write(chunk);
    });
  }

  async stop() {
    this.killAll();
    await this.unlisten();
  }
}

/**
 * For a test file: the shared stack and a ChaosProxy in front of its gateway, set up before the file's
 * tests and torn down after them. Read `ctx.stack` and `ctx.proxy` inside tests.
 */
export function proxiedStack() {
  const ctx = { stack: undefined, proxy: undefined };
  before(async () => {
    ctx.stack = await getStack();
    const u = new URL(ctx.stack.gatewayUrl);
    ctx.proxy = await new ChaosProxy({ upstreamHost: u.hostname, upstreamPort: Number(u.port) }).start();
  });
  after(async () => {
    await ctx.proxy?.stop();
    await releaseStack();
  });
  return ctx;
}
