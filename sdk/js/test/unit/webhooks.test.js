import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { verifyWebhook, WebhookVerificationError, WEBHOOK_EVENT_TYPES } from '../../dist/index.js';

// Vectors made once by Python's `standardwebhooks` 1.1.0 (the library receivers use), from the repo root:
//   .venv/bin/python - <<'EOF'
//   import base64, json
//   from datetime import datetime, timezone
//   from standardwebhooks import Webhook
//   old = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
//   new = "whsec_" + base64.b64encode(bytes(range(101, 133))).decode()
//   ts = 1764064800
//   event = {"id": "0d1e2f3a-4b5c-4d6e-8f7a-8b9c0d1e2f3a", "type": "webhook.test",
//            "timestamp": "2025-11-25T10:00:00.000Z", "merchant_id": "5f0c2a8e-3b1d-4c8e-9a6f-1d2e3f4a5b6c",
//            "outlet_id": None, "data": {"endpoint_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
//                                        "message": "Café test ✓"}}
//   body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
//   at = datetime.fromtimestamp(ts, tz=timezone.utc)
//   print(json.dumps({"old_secret": old, "new_secret": new, "timestamp": ts, "id": event["id"], "body": body,
//                     "sig_old": Webhook(old).sign(event["id"], at, body),
//                     "sig_new": Webhook(new).sign(event["id"], at, body)}, ensure_ascii=False, indent=1))
//   EOF
const OLD_SECRET = 'whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=';
const NEW_SECRET = 'whsec_ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=';
const OTHER_SECRET = 'whsec_' + Buffer.alloc(32, 7).toString('base64');
const TIMESTAMP = 1764064800;
const ID = '0d1e2f3a-4b5c-4d6e-8f7a-8b9c0d1e2f3a';
const BODY = '{"data":{"endpoint_id":"9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d","message":"Café test ✓"},"id":"0d1e2f3a-4b5c-4d6e-8f7a-8b9c0d1e2f3a","merchant_id":"5f0c2a8e-3b1d-4c8e-9a6f-1d2e3f4a5b6c","outlet_id":null,"timestamp":"2025-11-25T10:00:00.000Z","type":"webhook.test"}';
const SIG_OLD = 'v1,NeblmqDr1wii8dTuv/pSf9Cfwt9n49SiChUjo5msyyw=';
const SIG_NEW = 'v1,VKwE1czAWTy1tLHQ2eskdnn2rwQIc8IUulsj5ZgBrlA=';

const NOW = TIMESTAMP * 1000 + 42_000; // 42 s after the attempt: inside the default 300 s
const headers = (signature = SIG_OLD, timestamp = String(TIMESTAMP)) => ({
  'webhook-id': ID, 'webhook-timestamp': timestamp, 'webhook-signature': signature, 'content-type': 'application/json',
});

async function rejects(promise, reason) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof WebhookVerificationError, `a WebhookVerificationError, got ${err}`);
    assert.equal(err.name, 'WebhookVerificationError');
    assert.equal(err.reason, reason, err.message);
    assert.ok(err.message.length > 10, 'a readable message');
    return true;
  });
}

test('a request signed by standardwebhooks verifies: string, Buffer, Uint8Array and ArrayBuffer bodies', async () => {
  const bytes = Buffer.from(BODY, 'utf8');
  const bodies = [BODY, bytes, new Uint8Array(bytes), bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)];
  for (const body of bodies) {
    const event = await verifyWebhook(headers(), body, OLD_SECRET, { now: NOW });
    assert.equal(event.type, 'webhook.test');
    assert.equal(event.id, ID);
    assert.equal(event.outlet_id, null);
    assert.equal(event.data.message, 'Café test ✓');
  }
});

test('headers: any case in a plain object, a Headers instance, Node array values', async () => {
  const mixed = { 'Webhook-Id': ID, 'WEBHOOK-TIMESTAMP': String(TIMESTAMP), 'webhook-Signature': SIG_OLD };
  assert.equal((await verifyWebhook(mixed, BODY, OLD_SECRET, { now: NOW })).id, ID);
  const fetchHeaders = new Headers(headers());
  assert.equal((await verifyWebhook(fetchHeaders, BODY, OLD_SECRET, { now: new Date(NOW) })).id, ID);
  // Node gives repeated headers as arrays: two webhook-signature lines count as two candidates.
  const repeated = { ...headers(), 'webhook-signature': ['v1,AAAA', SIG_OLD] };
  assert.equal((await verifyWebhook(repeated, BODY, OLD_SECRET, { now: NOW })).id, ID);
});

test('a secret without its whsec_ prefix is accepted, as the Python library does', async () => {
  const event = await verifyWebhook(headers(), BODY, OLD_SECRET.slice('whsec_'.length), { now: NOW });
  assert.equal(event.id, ID);
});

test('a tampered body, id or timestamp, or the wrong secret: no matching signature', async () => {
  await rejects(verifyWebhook(headers(), BODY.replace('Café', 'Cafe'), OLD_SECRET, { now: NOW }), 'no_matching_signature');
  await rejects(verifyWebhook(headers(), BODY + ' ', OLD_SECRET, { now: NOW }), 'no_matching_signature');
  await rejects(verifyWebhook({ ...headers(), 'webhook-id': ID.replace('0d1e', '0d1f') }, BODY, OLD_SECRET, { now: NOW }),
    'no_matching_signature');
  await rejects(verifyWebhook(headers(SIG_OLD, String(TIMESTAMP + 1)), BODY, OLD_SECRET, { now: NOW }), 'no_matching_signature');
  await rejects(verifyWebhook(headers(), BODY, OTHER_SECRET, { now: NOW }), 'no_matching_signature');
  // A signature of another scheme with the right bytes is not a v1 signature.
  await rejects(verifyWebhook(headers(SIG_OLD.replace('v1,', 'v1a,')), BODY, OLD_SECRET, { now: NOW }), 'no_matching_signature');
  // Garbage in the header is a non-match, not a crash.
  await rejects(verifyWebhook(headers('v1,not*base64 nocomma v1,'), BODY, OLD_SECRET, { now: NOW }), 'no_matching_signature');
});

test('a stale or future timestamp is refused even with a valid signature', async () => {
  await rejects(verifyWebhook(headers(), BODY, OLD_SECRET, { now: (TIMESTAMP + 301) * 1000 }), 'timestamp_too_old');
  await rejects(verifyWebhook(headers(), BODY, OLD_SECRET, { now: (TIMESTAMP - 301) * 1000 }), 'timestamp_too_new');
  // The tolerance is an option; the edges are inclusive.
  assert.equal((await verifyWebhook(headers(), BODY, OLD_SECRET, { now: (TIMESTAMP + 300) * 1000 })).id, ID);
  await rejects(verifyWebhook(headers(), BODY, OLD_SECRET, { now: (TIMESTAMP + 61) * 1000, toleranceSeconds: 60 }),
    'timestamp_too_old');
  // Today's clock: the 2025 vector is long stale.
  await rejects(verifyWebhook(headers(), BODY, OLD_SECRET), 'timestamp_too_old');
  await rejects(verifyWebhook(headers(SIG_OLD, '17640648OO'), BODY, OLD_SECRET, { now: NOW }), 'invalid_timestamp');
  await rejects(verifyWebhook(headers(SIG_OLD, '1764064800.5'), BODY, OLD_SECRET, { now: NOW }), 'invalid_timestamp');
});

test('missing headers are named', async () => {
  for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
    const h = headers();
    delete h[name];
    await assert.rejects(verifyWebhook(h, BODY, OLD_SECRET, { now: NOW }), (err) => {
      assert.equal(err.reason, 'missing_header');
      assert.match(err.message, new RegExp(name));
      return true;
    });
  }
  await rejects(verifyWebhook(new Headers(), BODY, OLD_SECRET, { now: NOW }), 'missing_header');
});

test('rotation: both signatures in the header, either secret verifies, a third does not', async () => {
  const both = `${SIG_NEW} ${SIG_OLD}`;
  assert.equal((await verifyWebhook(headers(both), BODY, NEW_SECRET, { now: NOW })).id, ID);
  assert.equal((await verifyWebhook(headers(both), BODY, OLD_SECRET, { now: NOW })).id, ID);
  await rejects(verifyWebhook(headers(both), BODY, OTHER_SECRET, { now: NOW }), 'no_matching_signature');
  // After the overlap only the new signature is sent: the old secret no longer verifies.
  await rejects(verifyWebhook(headers(SIG_NEW), BODY, OLD_SECRET, { now: NOW }), 'no_matching_signature');
});

test('a bad secret and a parsed body are reported as such', async () => {
  await rejects(verifyWebhook(headers(), BODY, 'whsec_', { now: NOW }), 'invalid_secret');
  await rejects(verifyWebhook(headers(), BODY, 'whsec_not base64!', { now: NOW }), 'invalid_secret');
  await assert.rejects(verifyWebhook(headers(), JSON.parse(BODY), OLD_SECRET, { now: NOW }), TypeError);
});

test('a validly signed body that is not an envelope is invalid_payload', async () => {
  const { createHmac } = await import('node:crypto');
  const key = Buffer.from(OLD_SECRET.slice('whsec_'.length), 'base64');
  for (const body of ['not json', '[1,2]']) {
    const sig = 'v1,' + createHmac('sha256', key).update(`${ID}.${TIMESTAMP}.${body}`).digest('base64');
    await rejects(verifyWebhook(headers(sig), body, OLD_SECRET, { now: NOW }), 'invalid_payload');
  }
});

test('the event types are those with a JSON Schema in docs/webhooks/schemas', () => {
  const dir = new URL('../../../../docs/webhooks/schemas/', import.meta.url);
  const documented = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -'.json'.length));
  assert.ok(documented.length > 0);
  assert.deepEqual([...WEBHOOK_EVENT_TYPES].sort(), documented.sort());
});
