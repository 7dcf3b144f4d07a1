// The camera against docs/vectors (cells.json, range.json, signed.json) and the rules of
// docs/protocol.md that the vectors do not cover. Run: node --test
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  Camera, circleCells, geohash, haversineM, keyIdOf, keyRefusal, loadTrustStore, openJws, parseTrustYaml,
  rfc3339ToNs, signerRefusal, signJws,
} from './camera.mjs';

const vectors = (name) => JSON.parse(readFileSync(new URL(`../../vectors/${name}`, import.meta.url), 'utf8'));
const CELLS = vectors('cells.json');
const RANGE = vectors('range.json');
const SIGNED = vectors('signed.json');
const NOW = BigInt(SIGNED.now_ns);
const S = 1_000_000_000n;
const TRUST = loadTrustStore(SIGNED.trust_store);

/** An Ed25519 private key from the vectors' 32-byte seed and public key (hex). */
const keyOf = (name) => {
  const k = SIGNED.keys.find((key) => key.name.startsWith(name));
  const b = (hex) => Buffer.from(hex, 'hex').toString('base64url');
  return createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b(k.seed), x: b(k.public_key) }, format: 'jwk' });
};
const GATEWAY = keyOf('gateway gw-car-12');

/** A camera whose answers are collected, on a clock the test sets. */
function camera(options = {}) {
  const sent = [];
  const lines = [];
  const clock = { now: NOW };
  const cam = new Camera({
    id: 'bwc-12a', unit: 'car-12', prefix: 'mesh/v2', clock: () => clock.now, log: (l) => lines.push(l),
    publish: (topic, bytes) => sent.push({ topic, bytes }), ...options,
  });
  Object.defineProperty(cam, 'now', { get: () => clock.now, set: (v) => { clock.now = v; } });
  const feed = (lane, message) => {
    const before = sent.length;
    const line = cam.handle(lane, Buffer.from(typeof message === 'string' ? message : JSON.stringify(message)));
    const out = sent.slice(before).map(({ topic, bytes }) => {
      const outer = JSON.parse(bytes);
      const body = outer.signature ? JSON.parse(Buffer.from(outer.payload, 'base64url')) : outer;
      return { topic, body, outer };
    });
    return { line, out };
  };
  return Object.assign(cam, { sent, lines, feed });
}

/** A record_start like the vectors' (issued 1 s before now, 30 s of life). */
function command(over = {}) {
  return {
    type: 'record_start', v: 2, activation_id: 'a-77fd793654b858c3', issuer: 'gw-car-12',
    trigger: { event_id: 'e1', kind: 'weapon_draw', source: { type: 'manual', id: 't', authenticated: false }, unit_id: 'car-12', observed_at_ns: String(NOW - 2n * S) },
    issued_at_ns: String(NOW - S), origin: { lat: 39.952583, lon: -75.165222 }, radius_m: 150.0, pre_event_s: 60,
    targets: { units: ['car-12'], cameras: [] }, expires_at_ns: String(NOW + 29n * S), attempt: 0,
    cancel_until_ns: String(NOW + 9n * S), ...over,
  };
}
const signed = (payload, key = GATEWAY, kid = '4ebbe859de728e52') => signJws(Buffer.from(JSON.stringify(payload)), key, kid);
const cancelOf = (over = {}) => ({ type: 'record_cancel', v: 2, activation_id: 'a-77fd793654b858c3', issuer: 'gw-car-12', reason: 'bumped', at_ns: String(NOW), ...over });

// --- cells.json and range.json -----------------------------------------------------------------
test('every position of cells.json has its geohash cell at precision 5, 6 and 7', () => {
  for (const p of CELLS.positions) {
    assert.equal(geohash(p.lat, p.lon, 6), p.cell, p.name);
    assert.equal(geohash(p.lat, p.lon, 5), p.cell_5, p.name);
    assert.equal(geohash(p.lat, p.lon, 7), p.cell_7, p.name);
  }
});

test("every circle of cells.json goes to the cells its bounding box meets", () => {
  for (const c of CELLS.circles) assert.deepEqual(circleCells(c.lat, c.lon, c.radius_m), c.cells, c.name);
});

test('every case of range.json: the distance, and the verdict d <= radius_m', () => {
  assert.equal(RANGE.earth_radius_m, 6371008.8);
  for (const c of RANGE.cases) {
    const d = haversineM(c.origin.lat, c.origin.lon, c.camera.lat, c.camera.lon);
    assert.ok(Math.abs(d - c.distance_m) <= 0.0005, `${c.name}: ${d}`);
    assert.equal(d <= c.radius_m, c.in_range, c.name);
  }
});

test("every case of range.json is the camera's own decision: started, or out_of_range / silence", () => {
  for (const c of RANGE.cases) {
    const cmd = command({ origin: c.origin, radius_m: c.radius_m, targets: { units: ['car-7'], cameras: [] } });
    const own = camera({ position: c.camera }).feed('own', cmd);
    assert.equal(own.out[0].body.status, c.in_range ? 'started' : 'out_of_range', c.name);
    const shared = camera({ position: c.camera }).feed('cell', cmd);
    assert.equal(shared.out.length, c.in_range ? 1 : 0, c.name); // not concerned: says nothing
  }
});

// --- signed.json ---------------------------------------------------------------------------------
test('the key ids of signed.json are sha256 of the public key hex text', () => {
  for (const k of SIGNED.keys) assert.equal(keyIdOf(k.public_key), k.key_id, k.name);
});

/** The verdict a camera reached on one message: accept, drop:<code> or refuse:<code>. */
function cameraVerdict(cam, message) {
  const { line, out } = cam.feed('own', message);
  if (line.decision === 'dropped') return `drop:${line.reason.split(':')[0]}`;
  assert.equal(out.length, 1, JSON.stringify(line)); // its own topic: always one answer
  const ack = out[0].body;
  assert.equal(out[0].topic, `mesh/v2/ack/${JSON.parse(Buffer.from(JSON.parse(message).payload ?? '', 'base64url').toString() || message).issuer}/bwc-12a`);
  if (ack.status !== 'rejected') return 'accept';
  return ack.reason.startsWith('command expired') ? 'refuse:expired' : `refuse:${ack.reason.split(':')[0]}`;
}

/** A gateway's check of an ack, from the same functions (security.md steps 1-6). */
function gatewayVerdict(message) {
  const opened = openJws(JSON.parse(message), TRUST);
  if (opened.code) return `drop:${opened.code}`;
  const ack = JSON.parse(opened.bytes);
  if (ack.v !== 2) return 'drop:wrong_version';
  const refusal = signerRefusal(opened.key, ack) ?? keyRefusal(opened.key, NOW);
  return refusal ? `refuse:${refusal[0]}` : 'accept';
}

for (const c of SIGNED.cases) {
  test(`signed.json: ${c.name} → ${c.verdicts.join(', ')}`, () => {
    const cam = camera({ trust: TRUST, maxClockSkewS: SIGNED.max_clock_skew_s, maxCommandValidityS: SIGNED.max_command_validity_s });
    const got = c.messages.map((m) => (c.receiver === 'camera' ? cameraVerdict(cam, m) : gatewayVerdict(m)));
    assert.deepEqual(got, c.verdicts, c.why);
  });
}

test('the genuine ack of signed.json is what this camera signs, byte for byte', () => {
  const genuine = SIGNED.cases.find((c) => c.name === 'genuine ack').messages[0];
  const payload = Buffer.from(JSON.parse(genuine).payload, 'base64url');
  assert.equal(signJws(payload, keyOf('camera bwc-12a'), '9ee202a85da63321'), genuine);
});

test("the genuine command's ack: started, signed by the camera, accepted by a gateway's checks", () => {
  const cam = camera({ trust: TRUST, signingKey: keyOf('camera bwc-12a') });
  const { out } = cam.feed('own', SIGNED.cases[0].messages[0]);
  assert.equal(out[0].body.status, 'started');
  assert.equal(out[0].body.reason, 'unit car-12 targeted');
  assert.equal(typeof out[0].body.received_at_ns, 'string');
  assert.equal(out[0].body.recording_started_at_ns, String(NOW));
  assert.equal(gatewayVerdict(JSON.stringify(out[0].outer)), 'accept');
  // The same bytes again: on a shared topic silence, on its own topic already_recording.
  assert.equal(cam.feed('unit', SIGNED.cases[0].messages[0]).out.length, 0);
  assert.equal(cam.feed('own', SIGNED.cases[0].messages[0]).out[0].body.status, 'already_recording');
});

// --- the rest of protocol.md --------------------------------------------------------------------
test('v2 encodings: v must be 2, *_ns must be strings, a type-less payload is a record_start', () => {
  const cam = camera();
  assert.match(cam.feed('own', command({ v: 1 })).line.reason, /^wrong_version: v1 payload; this peer speaks protocol v2 only/);
  assert.equal(cam.feed('own', { ...command(), issued_at_ns: Number(NOW) }).line.reason, 'invalid_field: issued_at_ns');
  assert.equal(cam.feed('own', { ...command(), expires_at_ns: '9223372036854775808' }).line.reason, 'invalid_field: expires_at_ns');
  const { type, ...typeless } = cancelOf();
  assert.match(cam.feed('own', typeless).line.reason, /^missing_field: /); // read as a record_start
  assert.equal(cam.feed('own', 'x'.repeat(16385)).line.reason, 'too_large: 16385 bytes');
});

test('decisions: started, already_recording, out_of_range, rejected (expired), silence on shared topics', () => {
  const cam = camera({ position: { lat: 39.952583, lon: -75.165222 } });
  assert.equal(cam.feed('unit', command()).out[0].body.status, 'started');
  assert.equal(cam.feed('cell', command()).out.length, 0); // duplicate, shared
  assert.equal(cam.feed('own', command({ attempt: 1 })).out[0].body.reason, 'duplicate command for this activation');
  const other = cam.feed('cell', command({ activation_id: 'a-2', targets: { units: [], cameras: [] } })).out[0].body;
  assert.deepEqual([other.status, other.reason.startsWith('already recording; in range: 0.0 m')], ['already_recording', true]);
  assert.equal(other.recording_started_at_ns, undefined);
  const far = command({ activation_id: 'a-3', origin: { lat: 40, lon: -75 }, targets: { units: [], cameras: [] } });
  assert.equal(cam.feed('cell', far).out.length, 0);
  assert.match(cam.feed('own', far).out[0].body.reason, /^out of range: \d+\.\d m from the origin, radius 150 m$/);
  const old = command({ activation_id: 'a-4', expires_at_ns: String(NOW - 10n * S) });
  assert.equal(cam.feed('own', old).out[0].body.reason, 'command expired 10000 ms ago');
  assert.equal(cam.feed('cell', old).line.decision, 'dropped');
  assert.deepEqual(cam.sent.map((m) => m.topic).filter((t) => !t.startsWith('mesh/v2/ack/gw-car-12/')), []);
});

test('filters: named cameras pass them; roles and groups must both hold; asleep needs wake', () => {
  const cam = camera({ role: 'dash', groups: ['swat'] });
  const go = (over) => cam.feed('own', command({ activation_id: `a-${Math.random()}`, ...over })).out[0].body.status;
  assert.equal(go({ roles: ['body'] }), 'out_of_range');
  assert.equal(go({ roles: ['dash'], groups: ['k9'] }), 'out_of_range');
  cam.recording = false;
  assert.equal(go({ roles: ['body'], targets: { units: [], cameras: ['bwc-12a'] } }), 'started');
  const sleepy = camera({ asleep: true });
  assert.equal(sleepy.feed('own', command({ wake: false })).out[0].body.status, 'out_of_range');
});

test('pre_event_kept_s: frames at power-on + k/30 s, before the start, within min(pre_event_s, buffer)', () => {
  const cam = camera();
  const t0 = cam.bufferSinceNs;
  assert.equal(cam.preEventKeptS(t0 + 10_010_000_000n, 60), 10.033);
  assert.equal(cam.preEventKeptS(t0, 60), 0);
  assert.equal(cam.preEventKeptS(t0 + 500n * S, 60), 60);
  assert.equal(cam.preEventKeptS(t0 + 500n * S, 120), 120);
});

test('claims are per (activation_id, issuer): another issuer is decided afresh and joins', () => {
  const trust = TRUST;
  const cam = camera({ trust, requireSigned: false });
  assert.equal(cam.feed('unit', command({ issuer: 'gw-car-7' })).out[0].body.status, 'started');
  const genuine = cam.feed('unit', SIGNED.cases[0].messages[0]).out[0];
  assert.deepEqual([genuine.topic, genuine.body.status], ['mesh/v2/ack/gw-car-12/bwc-12a', 'already_recording']);
  // gw-car-7 cancels: only its claim goes; gw-car-12's keeps the recording.
  assert.equal(cam.feed('unit', cancelOf({ issuer: 'gw-car-7' })).out[0].body.outcome, 'kept_recording');
  assert.equal(cam.recording, true);
  assert.equal(cam.feed('cell', cancelOf({ issuer: 'gw-car-7' })).out.length, 0); // already obeyed
});

test('record_cancel: only the issuer holding a claim, signed, in its window; answers cancel_ack', () => {
  const cam = camera({ trust: TRUST, signingKey: keyOf('camera bwc-12a') });
  assert.equal(cam.feed('unit', signed(cancelOf())).out.length, 0); // acted on nothing yet: silence
  cam.feed('unit', signed(command()));
  // Signed by gw-car-12's key but naming gw-car-9: wrong_signer, told to the claim's issuer.
  const forged = cam.feed('all', signed(cancelOf({ issuer: 'gw-car-9' }))).out;
  assert.deepEqual(forged.map((o) => [o.topic, o.body.outcome, o.body.reason.split(':')[0], o.body.cancel_issuer]),
    [['mesh/v2/ack/gw-car-12/bwc-12a', 'refused', 'wrong_signer', 'gw-car-9']]);
  assert.equal(cam.feed('unit', cancelOf()).out[0].body.reason.split(':')[0], 'unsigned');
  assert.equal(cam.feed('unit', signed(cancelOf({ at_ns: String(NOW - 2n * S) }))).out[0].body.reason.split(':')[0], 'before_command');
  assert.equal(cam.feed('unit', signed(cancelOf({ at_ns: String(NOW + 10n * S) }))).out[0].body.reason.split(':')[0], 'deadline_passed');
  const obeyed = cam.feed('unit', signed(cancelOf())).out;
  assert.deepEqual(obeyed.map((o) => [o.body.type, o.body.outcome]), [['cancel_ack', 'stopped']]);
  assert.equal(gatewayVerdict(JSON.stringify(obeyed[0].outer)), 'accept');
  assert.equal(cam.recording, false);
  assert.equal(cam.feed('cell', signed(cancelOf())).out.length, 0); // a copy: not answered again
  const again = cam.feed('own', signed(command({ attempt: 1 }))).out[0].body;
  assert.deepEqual([again.status, again.reason], ['rejected', 'this activation was cancelled by its issuer']);
});

test('a command without cancel_until_ns cannot be cancelled; the very same command never starts twice', () => {
  const cam = camera({ trust: TRUST });
  const once = signed(command({ cancel_until_ns: null }));
  assert.equal(cam.feed('unit', once).out[0].body.status, 'started');
  assert.equal(cam.feed('unit', signed(cancelOf())).out[0].body.reason.split(':')[0], 'not_cancellable');
  cam.setRecording(false); // the recording ends by itself
  assert.equal(cam.feed('own', once).out[0].body.reason.split(':')[0], 'replayed');
  assert.equal(cam.feed('own', signed(command({ attempt: 1, cancel_until_ns: null }))).out[0].body.status, 'started');
});

test('rejected acks: at most 10 a second', () => {
  const cam = camera({ trust: TRUST });
  for (let i = 0; i < 15; i++) cam.feed('own', command({ activation_id: `a-${i}` }));
  assert.equal(cam.sent.length, 10);
  cam.now += S;
  cam.feed('own', command({ activation_id: 'a-late' }));
  assert.equal(cam.sent.length, 11);
});

// --- the trust store file --------------------------------------------------------------------------
const EXAMPLE = `# the example of docs/security.md
version: 1
keys:
- key_id: 4ebbe859de728e52
  role: gateway
  subject: gw-car-12
  public_key: d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
  not_before: null
  not_after: '2026-03-02T09:00:00Z'
  revoked_at: null
  note: rotated on 2026-03-01 with a 24 h overlap
- key_id: 9ee202a85da63321
  role: camera
  subject: bwc-12a
  public_key: 3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c
  not_before: '2026-03-01T09:00:00Z'
  not_after: null
  revoked_at: null
  note: ''
`;

test("the trust store: security.md's example, its validity windows and its refusals", () => {
  const keys = loadTrustStore(parseTrustYaml(EXAMPLE));
  const gw = keys.get('4ebbe859de728e52');
  assert.equal(gw.note, 'rotated on 2026-03-01 with a 24 h overlap');
  assert.equal(keyRefusal(gw, rfc3339ToNs('2026-03-02T08:59:59.999999999Z')), null);
  assert.equal(keyRefusal(gw, rfc3339ToNs('2026-03-02T11:00:00+02:00'))[0], 'key_expired');
  assert.equal(keyRefusal(keys.get('9ee202a85da63321'), rfc3339ToNs('2026-03-01T08:00:00Z'))[0], 'key_not_yet_valid');
  assert.equal(rfc3339ToNs('2026-03-01T12:30:05'), null); // no offset: refused
  const bad = (text, message) => assert.throws(() => loadTrustStore(parseTrustYaml(text), 'trust.yaml'), message);
  bad(EXAMPLE.replace("'2026-03-02T09:00:00Z'", "'2026-03-02T09:00:00'"), /keys\.0\.not_after/);
  bad(EXAMPLE.replace('9ee202a85da63321', '4ebbe859de728e52'), /keys\.1(\.key_id)?'/);
  bad(EXAMPLE.replace('version: 1', 'version: 2'), /version/);
  bad(`${EXAMPLE}extra: 1\n`, /extra/);
  assert.equal(loadTrustStore(parseTrustYaml('version: 1\nkeys: []\n')).size, 0);
});
