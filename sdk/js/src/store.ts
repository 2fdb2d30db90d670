// Durable storage of a terminal's offline queue. Implementations: MemoryQueueStore (tests, kiosks that
// accept losing drafts), FileQueueStore (Node, ./node.js) and IndexedDbQueueStore (browsers, ./browser.js).

import type { DraftRecord } from './draft.js';

export interface PutOptions {
  lazy?: boolean;
}

export interface QueueStore {
  /** Every record stored (pending, rejected and recently sealed), in any order. */
  load(): Promise<DraftRecord[]>;
  /**
   * Inserts or replaces a record (keyed by client_invoice_id). The promise resolves only once the
   * record is durable (fsync'd / the IndexedDB transaction committed), unless `opts.lazy` is set: then it
   * resolves once the write is handed to the OS (it survives a crash of the process, and reaches the
   * disk within about a second). The terminal writes lazily only what a replay can recover (a seal it
   * learnt of: replaying the draft returns the same invoice), never a new draft.
   */
  put(record: DraftRecord, opts?: PutOptions): Promise<void>;
  /** Removes a record (only sealed records past the retention are ever deleted); lazy like a lazy put. */
  delete(clientInvoiceId: string): Promise<void>;
  close(): Promise<void>;
}

/** Keeps records in memory only: a restart loses the queue. For tests. */
export class MemoryQueueStore implements QueueStore {
  private readonly records = new Map<string, string>();
  async load(): Promise<DraftRecord[]> {
    return [...this.records.values()].map((s) => JSON.parse(s) as DraftRecord);
  }
  async put(record: DraftRecord, _opts?: PutOptions): Promise<void> {
    this.records.set(record.client_invoice_id, JSON.stringify(record));
  }
  async delete(id: string): Promise<void> {
    this.records.delete(id);
  }
  async close(): Promise<void> {}
  get size(): number {
    return this.records.size;
  }
}
