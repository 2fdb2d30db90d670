// Errors raised by the SDK.

/** The sale or request is invalid and was not queued (fix the input). */
export class ValidationError extends Error {
  override name = 'ValidationError';
}

/** gRPC status codes, as carried in the gateway's JSON error bodies. */
export const GrpcCode = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5,
  ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9,
  ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
  DATA_LOSS: 15, UNAUTHENTICATED: 16,
} as const;

/**
 * What the offline queue does with a failed attempt:
 * - `retry`: the cloud could not be reached or could not answer (network, timeout, 5xx, 429, 408, ABORTED,
 *   499 CANCELLED: a server that was stopping dropped the call): keep the draft, back off.
 * - `auth`: 401/403: the terminal's key is wrong or revoked; drafts stay pending, the queue pauses (backs off) until fixed.
 * - `conflict`: 409 ALREADY_EXISTS: the server holds a different body under this client_invoice_id.
 * - `reject`: any other 4xx (bad input, 404, 413...): park the draft as rejected with the reason.
 */
export type FailureAction = 'retry' | 'auth' | 'conflict' | 'reject';

/** A failed call to the gateway: a network failure (status 0) or an HTTP error answer. */
export class ApiError extends Error {
  override name = 'ApiError';
  /** HTTP status; 0 when no answer was received (connection refused/reset, timeout, DNS, CORS). */
  readonly status: number;
  /** The gRPC code from the JSON error body, when there was one. */
  readonly code: number | undefined;
  readonly details: unknown[];
  /** Seconds from a Retry-After header, when present. */
  readonly retryAfterSeconds: number | undefined;
  readonly kind: 'network' | 'timeout' | 'http' | 'protocol';
  constructor(message: string, opts: { status: number; code?: number; details?: unknown[]; retryAfterSeconds?: number; kind: ApiError['kind']; cause?: unknown }) {
    super(message);
    this.status = opts.status;
    this.code = opts.code;
    this.details = opts.details ?? [];
    this.retryAfterSeconds = opts.retryAfterSeconds;
    this.kind = opts.kind;
    if (opts.cause !== undefined) (this as { cause?: unknown }).cause = opts.cause;
  }

  /** True when the cloud could not be reached at all (or did not answer in time). */
  get unreachable(): boolean {
    return this.kind === 'network' || this.kind === 'timeout';
  }

  get action(): FailureAction {
    return classifyFailure(this);
  }
}

export function classifyFailure(e: ApiError): FailureAction {
  if (e.kind !== 'http') return 'retry';
  const s = e.status;
  if (s >= 500 || s === 429 || s === 408 || s === 425) return 'retry';
  // 499 is how the gateway maps a gRPC CANCELLED: the server gave up on the call (it was shutting down),
  // nothing about the sale was wrong. Parking the draft as rejected would lose a sale.
  if (s === 499 || e.code === GrpcCode.CANCELLED) return 'retry';
  if (s === 401 || s === 403) return 'auth';
  if (s === 409) {
    // ABORTED (a concurrent attempt with the same key, a serialization failure) is transient.
    if (e.code === GrpcCode.ALREADY_EXISTS) return 'conflict';
    return 'retry';
  }
  if (s >= 400) return 'reject';
  return 'retry';
}
