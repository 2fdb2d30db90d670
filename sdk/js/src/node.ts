// Node entry point: the core plus the file-backed queue.

import * as path from 'node:path';
import { FileQueueStore } from './node-store.js';
import type { FileQueueStoreOptions } from './node-store.js';
import { PosTerminal } from './terminal.js';
import type { TerminalOptions } from './terminal.js';

export * from './index.js';
export { FileQueueStore } from './node-store.js';
export type { FileQueueStoreOptions } from './node-store.js';

export interface NodeTerminalOptions extends Omit<TerminalOptions, 'store'> {
  /** Directory of the queue files (one per outlet and terminal). */
  dataDir: string;
  storeOptions?: FileQueueStoreOptions;
}

/** The queue file of a terminal in `dataDir`. */
export function queueFilePath(dataDir: string, outletId: string, posTerminalId: string): string {
  const safe = (s: string): string => s.replace(/[^A-Za-z0-9._-]/g, '_');
  return path.join(dataDir, `queue-${safe(outletId)}-${safe(posTerminalId)}.jsonl`);
}

/** Opens a terminal whose offline queue lives in a file under `dataDir` (created if needed). */
export async function openNodeTerminal(opts: NodeTerminalOptions): Promise<PosTerminal> {
  const store = await FileQueueStore.open(queueFilePath(opts.dataDir, opts.outletId, opts.posTerminalId), opts.storeOptions);
  try {
    return await PosTerminal.open({ ...opts, store });
  } catch (e) {
    await store.close();
    throw e;
  }
}
