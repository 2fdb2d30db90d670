// Browser entry point: the core plus the IndexedDB-backed queue.

import type { DraftRecord } from './draft.js';
import type { PutOptions, QueueStore } from './store.js';
import { PosTerminal } from './terminal.js';
import type { TerminalOptions } from './terminal.js';

export * from './index.js';

const STORE = 'records';

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/**
 * A terminal's queue in IndexedDB: one database per terminal, one object store keyed by
 * client_invoice_id. Every write is its own readwrite transaction with durability "strict" and resolves
 * when the transaction completes (committed to disk).
 */
export class IndexedDbQueueStore implements QueueStore {
  readonly name: string;
  private db: IDBDatabase | undefined;

  private constructor(name: string, db: IDBDatabase) {
    this.name = name;
    this.db = db;
  }

  static async open(name: string, factory: IDBFactory = indexedDB): Promise<IndexedDbQueueStore> {
    const open = factory.open(name, 1);
    open.onupgradeneeded = () => {
      const db = open.result;
      if (!db.objectStoreNames.contains(STORE)) {
        const os = db.createObjectStore(STORE, { keyPath: 'client_invoice_id' });
        os.createIndex('seq', 'seq');
      }
    };
    const db = await req(open);
    const s = new IndexedDbQueueStore(name, db);
    db.onversionchange = () => {
      db.close();
      s.db = undefined;
    };
    return s;
  }

  private tx(mode: IDBTransactionMode, durability: 'strict' | 'relaxed' = 'strict'): IDBObjectStore {
    if (!this.db) throw new Error(`IndexedDB queue ${this.name} is closed`);
    const opts = { durability } as IDBTransactionOptions;
    return this.db.transaction(STORE, mode, opts).objectStore(STORE);
  }

  private done(store: IDBObjectStore): Promise<void> {
    const t = store.transaction;
    return new Promise((resolve, reject) => {
      t.oncomplete = () => resolve();
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error ?? new Error('IndexedDB transaction aborted'));
    });
  }

  async load(): Promise<DraftRecord[]> {
    const s = this.tx('readonly');
    return (await req(s.getAll())) as DraftRecord[];
  }

  async put(record: DraftRecord, opts: PutOptions = {}): Promise<void> {
    const s = this.tx('readwrite', opts.lazy ? 'relaxed' : 'strict');
    const done = this.done(s);
    // Store a plain clone so later in-memory changes cannot leak into the stored record.
    s.put(JSON.parse(JSON.stringify(record)));
    await done;
  }

  async delete(id: string): Promise<void> {
    const s = this.tx('readwrite', 'relaxed');
    const done = this.done(s);
    s.delete(id);
    await done;
  }

  async close(): Promise<void> {
    this.db?.close();
    this.db = undefined;
  }
}

export interface BrowserTerminalOptions extends Omit<TerminalOptions, 'store'> {
  /** IndexedDB database name (default "fiscal-pos-<outletId>-<posTerminalId>"). */
  databaseName?: string;
  /** Retry at once when the browser reports it is back online (default true). */
  listenOnline?: boolean;
}

/**
 * Takes the Web Lock named `name` if no other tab/worker of this origin holds it; resolves with its
 * release function, or undefined when it is held elsewhere. Without the Web Locks API: a no-op release.
 */
async function takeLock(name: string): Promise<(() => void) | undefined> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) return () => {};
  return new Promise((resolve) => {
    void locks.request(name, { ifAvailable: true }, (lock) => {
      if (!lock) {
        resolve(undefined);
        return undefined;
      }
      // Held until released (close) or until the page goes away.
      return new Promise<void>((release) => resolve(() => release()));
    });
  });
}

/**
 * Opens a terminal whose offline queue lives in IndexedDB. One tab at a time owns a terminal's queue (a Web
 * Lock): opening it in a second tab throws, so two tabs never replay the same queue concurrently.
 */
export async function openBrowserTerminal(opts: BrowserTerminalOptions): Promise<PosTerminal> {
  const name = opts.databaseName ?? `fiscal-pos-${opts.outletId}-${opts.posTerminalId}`;
  const release = await takeLock(name);
  if (!release) throw new Error(`terminal ${opts.posTerminalId} is already open in another tab or window`);
  let t: PosTerminal;
  try {
    const store = await IndexedDbQueueStore.open(name);
    t = await PosTerminal.open({ ...opts, store });
  } catch (e) {
    release();
    throw e;
  }
  const onOnline = (): void => t.syncNow();
  const listen = opts.listenOnline !== false && typeof addEventListener === 'function';
  if (listen) addEventListener('online', onOnline);
  const close = t.close.bind(t);
  t.close = async () => {
    if (listen) removeEventListener('online', onOnline);
    try {
      await close();
    } finally {
      release();
    }
  };
  return t;
}
