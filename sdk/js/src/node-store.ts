// FileQueueStore: a terminal's offline queue in one file, for Node.
//
// The file is an append-only log of JSON lines ({"p": record} = put, {"d": id} = delete). Every write is
// appended and fsync'd (fdatasync) before its promise resolves; concurrent writes are group-committed
// (one write + one fsync for all of them). When the log holds much more than the live records it is
// compacted: the live records are written to a temporary file, fsync'd, renamed over the log (atomic on
// POSIX file systems) and the directory fsync'd. Opening the store always compacts, which also drops a
// torn last line left by a crash in the middle of an append (that write was never acknowledged).
// A lock file (pid inside) keeps two processes from sharing one queue; a lock left by a dead process
// (e.g. after SIGKILL) is taken over.

import { promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import * as os from 'node:os';
import type { DraftRecord } from './draft.js';
import type { PutOptions, QueueStore } from './store.js';

export interface FileQueueStoreOptions {
  /** fsync every write (default true). Turning it off trades durability on power loss for speed. */
  fsync?: boolean;
  /** Compact when the log has more than this many lines and more than twice the live records (default 2000). */
  compactMinLines?: number;
  /** Take the lock file (default true). */
  lock?: boolean;
}

interface Pending {
  line: string;
  sync: boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class FileQueueStore implements QueueStore {
  readonly file: string;
  private readonly fsync: boolean;
  private readonly compactMinLines: number;
  private readonly useLock: boolean;
  private readonly live = new Map<string, string>();
  private lines = 0;
  private fh: FileHandle | undefined;
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private closed = false;
  private locked = false;
  /** Lines that could not be parsed when the file was opened (a torn last write, or damage). */
  skippedLines = 0;
  /** Number of compactions done (for tests and diagnostics). */
  compactions = 0;

  private constructor(file: string, opts: FileQueueStoreOptions) {
    this.file = path.resolve(file);
    this.fsync = opts.fsync ?? true;
    this.compactMinLines = opts.compactMinLines ?? 2000;
    this.useLock = opts.lock ?? true;
  }

  /** Opens (creating if needed) the queue file, taking its lock and compacting it. */
  static async open(file: string, opts: FileQueueStoreOptions = {}): Promise<FileQueueStore> {
    const s = new FileQueueStore(file, opts);
    await fsp.mkdir(path.dirname(s.file), { recursive: true });
    if (s.useLock) await s.acquireLock();
    try {
      await s.readLog();
      await s.compact();
    } catch (e) {
      await s.releaseLock();
      throw e;
    }
    return s;
  }

  get lockFile(): string {
    return `${this.file}.lock`;
  }

  private async acquireLock(): Promise<void> {
    const me = `${process.pid}@${os.hostname()}`;
    for (let i = 0; i < 3; i++) {
      try {
        const fh = await fsp.open(this.lockFile, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o644);
        await fh.writeFile(me);
        await fh.close();
        this.locked = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      let owner = '';
      try {
        owner = (await fsp.readFile(this.lockFile, 'utf8')).trim();
      } catch {
        continue; // removed meanwhile: try again
      }
      const [pidText, host] = owner.split('@');
      const pid = Number(pidText);
      const sameHost = !host || host === os.hostname();
      if (sameHost && Number.isInteger(pid) && pid > 0 && pid !== process.pid && !isAlive(pid)) {
        await fsp.rm(this.lockFile, { force: true });
        continue;
      }
      if (!owner) {
        // An empty lock file: its creator died between create and write.
        await fsp.rm(this.lockFile, { force: true });
        continue;
      }
      throw new Error(`queue ${this.file} is in use by ${owner} (lock ${this.lockFile})`);
    }
    throw new Error(`could not lock ${this.lockFile}`);
  }

  private async releaseLock(): Promise<void> {
    if (!this.locked) return;
    this.locked = false;
    await fsp.rm(this.lockFile, { force: true });
  }

  private async readLog(): Promise<void> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    const lines = text.split('\n');
    let damaged = false;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.length === 0) continue;
      let op: { p?: DraftRecord; d?: string };
      try {
        op = JSON.parse(line);
      } catch {
        this.skippedLines++;
        // A torn final line is expected after a crash; anything else is damage worth keeping a copy of.
        if (i !== lines.length - 1) damaged = true;
        continue;
      }
      if (op.p && typeof op.p.client_invoice_id === 'string') this.live.set(op.p.client_invoice_id, JSON.stringify(op.p));
      else if (typeof op.d === 'string') this.live.delete(op.d);
    }
    if (damaged) await fsp.copyFile(this.file, `${this.file}.damaged-${Date.now()}`);
  }

  async load(): Promise<DraftRecord[]> {
    return [...this.live.values()].map((s) => JSON.parse(s) as DraftRecord);
  }

  put(record: DraftRecord, opts: PutOptions = {}): Promise<void> {
    const json = JSON.stringify(record);
    this.live.set(record.client_invoice_id, json);
    return this.append(`{"p":${json}}`, !opts.lazy);
  }

  delete(id: string): Promise<void> {
    this.live.delete(id);
    return this.append(JSON.stringify({ d: id }), false);
  }

  get size(): number {
    return this.live.size;
  }

  private append(line: string, sync: boolean): Promise<void> {
    if (this.closed) return Promise.reject(new Error('queue store is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ line, sync, resolve, reject });
      this.kick();
    });
  }

  /** Written but not fsync'd yet (lazy writes): fsync'd by the next synchronous write or the timer. */
  private dirty = false;
  private lazyTimer: ReturnType<typeof setTimeout> | undefined;

  private scheduleLazySync(): void {
    if (this.lazyTimer || !this.fsync) return;
    this.lazyTimer = setTimeout(() => {
      this.lazyTimer = undefined;
      if (!this.dirty || this.closed) return;
      // Goes through the queue so that it never races an append or a compaction.
      this.queue.push({ line: '', sync: true, resolve: () => {}, reject: () => {} });
      this.kick();
    }, 1000);
    (this.lazyTimer as { unref?: () => void }).unref?.();
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
      if (this.queue.length > 0 && !this.closed) this.kick();
    });
  }

  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      try {
        if (!this.fh) throw new Error('queue store is not open');
        const lines = batch.filter((b) => b.line.length > 0);
        if (lines.length > 0) await this.fh.appendFile(lines.map((b) => b.line).join('\n') + '\n', 'utf8');
        if (this.fsync && batch.some((b) => b.sync)) {
          await this.fh.datasync();
          this.dirty = false;
        } else if (lines.length > 0) {
          this.dirty = true;
          this.scheduleLazySync();
        }
        this.lines += lines.length;
        for (const b of batch) b.resolve();
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
      if (this.lines > this.compactMinLines && this.lines > 2 * this.live.size) {
        try {
          await this.compact();
        } catch (e) {
          // The log is still valid; compaction is retried after the next write.
          if (typeof console !== 'undefined') console.error('fiscal-pos-sdk: compaction failed', e);
        }
      }
    }
  }

  /** Rewrites the log as a snapshot of the live records (write temp, fsync, rename, fsync dir). */
  private async compact(): Promise<void> {
    const tmp = `${this.file}.${process.pid}.tmp`;
    const body = [...this.live.values()].map((j) => `{"p":${j}}\n`).join('');
    this.dirty = false;
    const th = await fsp.open(tmp, 'w', 0o644);
    try {
      await th.writeFile(body, 'utf8');
      if (this.fsync) await th.sync();
    } finally {
      await th.close();
    }
    if (this.fh) {
      await this.fh.close();
      this.fh = undefined;
    }
    await fsp.rename(tmp, this.file);
    if (this.fsync) await fsyncDir(path.dirname(this.file));
    this.fh = await fsp.open(this.file, 'a');
    this.lines = this.live.size;
    this.compactions++;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    while (this.flushing) await this.flushing;
    this.closed = true;
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = undefined;
    if (this.fh) {
      if (this.dirty && this.fsync) await this.fh.datasync();
      await this.fh.close();
      this.fh = undefined;
    }
    await this.releaseLock();
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let dh: FileHandle | undefined;
  try {
    dh = await fsp.open(dir, 'r');
    await dh.sync();
  } catch {
    // Some platforms (Windows) cannot fsync a directory; the rename is still atomic there.
  } finally {
    await dh?.close();
  }
}
