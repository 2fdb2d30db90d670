// UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, a 12-bit counter (method 1 of section 6.2)
// that keeps ids generated within one millisecond (or when the clock steps back) strictly increasing,
// then 62 random bits. Uses the Web Crypto API (browsers and Node >= 19 expose globalThis.crypto).

let lastMs = -1;
let counter = 0;

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  globalThis.crypto.getRandomValues(b);
  return b;
}

/** A new UUIDv7; `nowMs` defaults to Date.now() (the terminal passes its clock). */
export function uuidv7(nowMs: number = Date.now()): string {
  let ms = Math.floor(nowMs);
  const rnd = randomBytes(10);
  if (ms > lastMs) {
    lastMs = ms;
    counter = ((rnd[0]! & 0x07) << 8) | rnd[1]!; // start low in the 12-bit space, leaving room to count
  } else {
    ms = lastMs;
    counter += 1;
    if (counter > 0xfff) {
      // Counter overflow: borrow the next millisecond.
      lastMs += 1;
      ms = lastMs;
      counter = 0;
    }
  }
  const b = new Uint8Array(16);
  let t = ms;
  for (let i = 5; i >= 0; i--) {
    b[i] = t % 256;
    t = Math.floor(t / 256);
  }
  b[6] = 0x70 | ((counter >> 8) & 0x0f);
  b[7] = counter & 0xff;
  b[8] = 0x80 | (rnd[2]! & 0x3f);
  for (let i = 9; i < 16; i++) b[i] = rnd[i - 6]!;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const UUID7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function isUuidv7(s: string): boolean {
  return UUID7_RE.test(s);
}

/** The millisecond timestamp carried by a UUIDv7. */
export function uuidv7Time(s: string): number {
  return parseInt(s.replace(/-/g, '').slice(0, 12), 16);
}
