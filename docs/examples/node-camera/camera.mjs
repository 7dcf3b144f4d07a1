// A trigger-mesh protocol v2 camera in Node.js, written from docs/ alone (protocol.md,
// security.md, schemas/, vectors/): `mqtt` for the broker, node:crypto for Ed25519.
// usage: node camera.mjs --broker mqtt://host:port --prefix P --id ID --unit U --lat X --lon Y
//        [--role body|dash] [--key ID.key --trust trust.yaml] [--fix-file F] (README.md has the rest)
import { createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export const EARTH_RADIUS_M = 6371008.8;
const ID = /^[A-Za-z0-9._:-]{1,64}$/;
const NS = /^(0|[1-9][0-9]{0,18})$/; // *_ns times: decimal strings, read with BigInt
const NS_MAX = 9223372036854775807n;
const S = 1_000_000_000n;
const MS = 1_000_000n;
const B64URL = /^[A-Za-z0-9_-]+$/;
const TYP = 'trigger-mesh+json';
const MAX_COMMAND_BYTES = 16384;
const BASE32 = '0123456789bcdefghjkmnpqrstuvwxyz';
const WALL = BigInt(Date.now()) * MS - process.hrtime.bigint(); // UTC ns = WALL + a monotonic ns

// --- geometry: protocol.md "The range rule" and "Cells" ---------------------------------------
export function haversineM(lat1, lon1, lat2, lon2) {
  const rad = Math.PI / 180; // one constant, multiplied by: the same bits as the gateway
  const p1 = lat1 * rad;
  const p2 = lat2 * rad;
  const dp = p2 - p1;
  const dl = (lon2 - lon1) * rad;
  const a = Math.sin(dp / 2) ** 2 + Math.cos(p1) * Math.cos(p2) * Math.sin(dl / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(a)));
}

export function geohash(lat, lon, chars = 6) {
  const box = [[-180, 180], [-90, 90]];
  let code = '';
  let bits = 0;
  for (let k = 0; k < 5 * chars; k++) {
    const span = box[k % 2];
    const value = k % 2 ? lat : lon;
    const mid = (span[0] + span[1]) / 2;
    bits = bits * 2 + (value >= mid ? 1 : 0);
    span[value >= mid ? 0 : 1] = mid;
    if (k % 5 === 4) [code, bits] = [code + BASE32[bits], 0];
  }
  return code;
}

/** The cells whose box meets the bounding box of a circle (the gateway's fan-out; a camera
 * needs only its own cell, this is here to check docs/vectors/cells.json). */
export function circleCells(lat, lon, radiusM, chars = 6) {
  const dLat = (radiusM / EARTH_RADIUS_M) * (180 / Math.PI);
  const dLon = Math.min(180, dLat / Math.cos(lat * (Math.PI / 180)));
  const lonBits = Math.ceil((5 * chars) / 2);
  const latBits = Math.floor((5 * chars) / 2);
  const [w, h] = [360 / 2 ** lonBits, 180 / 2 ** latBits];
  const y0 = Math.max(0, Math.floor((lat - dLat + 90) / h));
  const y1 = Math.min(2 ** latBits - 1, Math.floor((lat + dLat + 90) / h));
  const x0 = Math.floor((lon - dLon + 180) / w);
  const x1 = Math.floor((lon + dLon + 180) / w);
  const cells = new Set();
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const col = ((x % 2 ** lonBits) + 2 ** lonBits) % 2 ** lonBits; // across the antimeridian
      cells.add(geohash(-90 + (y + 0.5) * h, -180 + (col + 0.5) * w, chars));
    }
  }
  return [...cells].sort();
}

// --- keys and the trust store: security.md "Keys and the trust store" ---------------------------
/** key_id: the first 16 hex digits of SHA-256 over the public key's 64-character hex text. */
export const keyIdOf = (publicHex) => createHash('sha256').update(publicHex, 'ascii').digest('hex').slice(0, 16);
export const publicHexOf = (key) =>
  Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x, 'base64url').toString('hex');

/** An RFC 3339 date-time with its offset, as ns since the epoch (BigInt); null if it is not one. */
export function rfc3339ToNs(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$/.exec(text);
  if (!m) return null;
  const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  const fraction = BigInt(((m[7] ?? '.').slice(1) + '000000000').slice(0, 9));
  const offset = m[9] ? BigInt((m[9] === '-' ? -1 : 1) * (+m[10] * 60 + +m[11]) * 60) * S : 0n;
  return BigInt(ms) * MS + fraction - offset;
}

/** The YAML `trigger-mesh keys` writes: `version: 1` and `keys:`, a list of flat mappings of
 * scalars (plain, 'single' or "double" quoted, null). Anything else is refused. */
export function parseTrustYaml(text, file = 'trust store') {
  const scalar = (raw, where) => {
    const v = raw.trim();
    if (v === '' || v === 'null' || v === '~') return null;
    if (v.startsWith("'")) {
      if (!/^'(?:[^']|'')*'$/.test(v)) throw new Error(`${file}: ${where}: bad quoted string`);
      return v.slice(1, -1).replaceAll("''", "'");
    }
    if (v.startsWith('"')) return JSON.parse(v);
    if (v === '[]') return [];
    if (/^-?\d+$/.test(v)) return Number(v);
    if (/^[[{&*!|>%@`#]/.test(v)) throw new Error(`${file}: ${where}: unsupported YAML value ${v}`);
    return v;
  };
  const doc = {};
  let entry = null;
  text.split(/\r?\n/).forEach((line, i) => {
    const where = `line ${i + 1}`;
    if (/^\s*(#.*)?$/.test(line)) return;
    const m = /^(- |  )?([A-Za-z_]+):(?:\s+(.*?))?\s*$/.exec(line);
    if (!m) throw new Error(`${file}: ${where}: not the trust store's YAML: ${line}`);
    const [, indent, name, raw = ''] = m;
    if (!indent) {
      if (name in doc) throw new Error(`${file}: ${where}: key '${name}' twice`);
      doc[name] = name === 'keys' && raw === '' ? [] : scalar(raw, where);
      entry = null;
      return;
    }
    if (!Array.isArray(doc.keys)) throw new Error(`${file}: ${where}: an entry outside 'keys'`);
    if (indent === '- ') doc.keys.push((entry = {}));
    if (!entry || name in entry) throw new Error(`${file}: ${where}: bad entry`);
    entry[name] = scalar(raw, where);
  });
  return doc;
}

/** The checks security.md asks of every reader; returns Map key_id → key. Throws on a bad file. */
export function loadTrustStore(doc, file = 'trust store') {
  const fail = (where, why, e) => {
    const who = e ? ` (the entry of key_id ${e.key_id}, role ${e.role}, subject ${e.subject})` : '';
    throw new Error(`${file}: key '${where}': ${why}${who}`);
  };
  if (doc.version === undefined && doc.keys === undefined) doc = { version: 1, keys: [] };
  for (const k of Object.keys(doc)) if (!['version', 'keys'].includes(k)) fail(k, 'unknown key');
  if (doc.version !== 1) fail('version', 'must be 1');
  if (!Array.isArray(doc.keys)) fail('keys', 'must be a list');
  const keys = new Map();
  doc.keys.forEach((e, i) => {
    const at = (f) => `keys.${i}${f ? `.${f}` : ''}`;
    const allowed = ['key_id', 'role', 'subject', 'public_key', 'not_before', 'not_after', 'revoked_at', 'note'];
    for (const k of Object.keys(e)) if (!allowed.includes(k)) fail(at(k), 'unknown key', e);
    if (!/^[0-9a-f]{16}$/.test(e.key_id ?? '')) fail(at('key_id'), 'must be 16 lowercase hex digits', e);
    if (!['gateway', 'camera', 'dispatch'].includes(e.role)) fail(at('role'), 'must be gateway, camera or dispatch', e);
    if (!ID.test(e.subject ?? '')) fail(at('subject'), `must match ${ID}`, e);
    if (!/^[0-9a-f]{64}$/.test(e.public_key ?? '')) fail(at('public_key'), 'must be 64 lowercase hex digits', e);
    const computed = keyIdOf(e.public_key);
    if (computed !== e.key_id) fail(at(), `key_id ${e.key_id} does not match its public key (${computed})`);
    if (typeof (e.note ?? '') !== 'string' || (e.note ?? '').length > 256) fail(at('note'), 'at most 256 characters', e);
    const times = {};
    for (const f of ['not_before', 'not_after', 'revoked_at']) {
      if (e[f] === null || e[f] === undefined) times[f] = null;
      else if ((times[f] = typeof e[f] === 'string' ? rfc3339ToNs(e[f]) : null) === null) {
        fail(at(f), 'not an RFC 3339 date-time with its offset', e);
      }
    }
    if (keys.has(e.key_id)) fail(at('key_id'), `key ${e.key_id} is listed twice: one entry per key`);
    const x = Buffer.from(e.public_key, 'hex').toString('base64url');
    const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    keys.set(e.key_id, { ...e, ...times, publicKey });
  });
  return keys;
}

// --- JWS: security.md "What a signature covers" --------------------------------------------------
const b64 = (s) => Buffer.from(s).toString('base64url');
// One spelling per value (security.md): re-encoding what it decodes to gives it back, so the
// unused low bits of the last character are zero. Node's decoder ignores those bits.
const isB64url = (s) =>
  typeof s === 'string' && B64URL.test(s) && s.length % 4 !== 1 &&
  Buffer.from(s, 'base64url').toString('base64url') === s;
const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
const utf8 = (bytes) => new TextDecoder('utf-8', { fatal: true }).decode(bytes);

/** The flattened JWS of these exact payload bytes, signed with an Ed25519 private key. */
export function signJws(payloadBytes, privateKey, kid) {
  const protectedB64 = b64(JSON.stringify({ alg: 'EdDSA', kid, typ: TYP }));
  const payloadB64 = Buffer.from(payloadBytes).toString('base64url');
  const signature = sign(null, Buffer.from(`${protectedB64}.${payloadB64}`), privateKey).toString('base64url');
  return JSON.stringify({ protected: protectedB64, payload: payloadB64, signature });
}

/** Steps 1–3 of "How a receiver checks a signed message": envelope, key, signature. Nothing of
 * the payload is read here. Returns {key, bytes} or {code, why} (dropped, never answered). */
export function openJws(jws, trust) {
  const bad = (why) => ({ code: 'bad_jws', why });
  if (![jws.protected, jws.payload, jws.signature].every(isB64url)) return bad('protected, payload, signature: base64url');
  if (jws.signature.length !== 86) return bad('the signature is not 64 bytes');
  let header;
  try {
    header = JSON.parse(utf8(Buffer.from(jws.protected, 'base64url')));
  } catch {
    return bad('the protected header is not JSON');
  }
  if (!isObj(header)) return bad('the protected header is not a JSON object');
  if (!('alg' in header && 'kid' in header && 'typ' in header)) return bad('the protected header lacks alg, kid or typ');
  if (header.alg !== 'EdDSA' && header.alg !== 'Ed25519') return bad(`alg ${JSON.stringify(header.alg)} is not EdDSA`);
  if (header.typ !== TYP) return bad(`typ ${JSON.stringify(header.typ)} is not ${TYP}`);
  if ('crit' in header) return bad('crit is not supported');
  const key = typeof header.kid === 'string' ? trust.get(header.kid) : undefined;
  if (!key) return { code: 'unknown_key', why: `no key ${JSON.stringify(header.kid)} in the trust store` };
  const input = Buffer.from(`${jws.protected}.${jws.payload}`);
  if (!verify(null, input, key.publicKey, Buffer.from(jws.signature, 'base64url'))) {
    return { code: 'bad_signature', why: `does not verify with key ${key.key_id}` };
  }
  return { key, bytes: Buffer.from(jws.payload, 'base64url') };
}

/** Step 5: may this key sign this message? null if so, else [code, why]. */
export function signerRefusal(key, msg) {
  const who = `key ${key.key_id} (${key.role} ${key.subject})`;
  const fits = {
    record_start: () => ['gateway', 'dispatch'].includes(key.role) && key.subject === msg.issuer,
    record_cancel: () => key.role === 'gateway' && key.subject === msg.issuer,
    ack: () => key.role === 'camera' && key.subject === msg.camera_id,
    cancel_ack: () => key.role === 'camera' && key.subject === msg.camera_id,
    recording: () => key.role === 'camera' && key.subject === msg.camera_id,
  }[msg.type];
  if (fits && fits()) return null;
  const forWhom = msg.issuer ?? msg.camera_id;
  return ['wrong_signer', `${who} may not sign a ${msg.type} of ${forWhom}`];
}

/** Step 6: is the key valid now? */
export function keyRefusal(key, now) {
  if (key.revoked_at !== null && now >= key.revoked_at) return ['key_revoked', `key ${key.key_id} was revoked`];
  if (key.not_before !== null && now < key.not_before) return ['key_not_yet_valid', `key ${key.key_id} is not valid yet`];
  if (key.not_after !== null && now >= key.not_after) return ['key_expired', `key ${key.key_id} has expired`];
  return null;
}

// --- payloads: schemas/record_start, record_cancel; protocol.md "Conventions" ---------------------
const id = (x) => typeof x === 'string' && ID.test(x);
const ns = (x) => typeof x === 'string' && NS.test(x) && BigInt(x) <= NS_MAX;
const int = (lo, hi) => (x) => Number.isInteger(x) && x >= lo && x <= hi;
const num = (lo, hi) => (x) => typeof x === 'number' && Number.isFinite(x) && x >= lo && x <= hi;
const listOf = (ok) => (x) => Array.isArray(x) && x.every(ok);
const point = (x) => isObj(x) && num(-90, 90)(x.lat) && num(-180, 180)(x.lon);
const FIELDS = {
  record_start: [
    ['activation_id', id, true], ['issuer', id, true], ['issued_at_ns', ns, true], ['expires_at_ns', ns, true],
    ['trigger', (t) => isObj(t) && typeof t.event_id === 'string' && ns(t.observed_at_ns), true],
    ['origin', (o) => o === null || point(o), true], ['radius_m', num(0, Infinity), true],
    ['pre_event_s', int(0, 120), true],
    ['targets', (t) => isObj(t) && listOf(id)(t.units ?? []) && listOf(id)(t.cameras ?? []), true],
    ['attempt', int(0, Number.MAX_SAFE_INTEGER)], ['priority', int(1, 5)], ['wake', (w) => typeof w === 'boolean'],
    ['roles', listOf((r) => r === 'body' || r === 'dash')], ['groups', listOf(id)],
    ['cancel_until_ns', (x) => x === null || ns(x)],
  ],
  record_cancel: [
    ['activation_id', id, true], ['issuer', id, true], ['at_ns', ns, true],
    ['reason', (r) => typeof r === 'string' && r.length <= 512],
  ],
};

/** A command object, checked: {msg} or {code, why}. Without `type` it is a record_start. */
export function readCommand(m) {
  if (!isObj(m)) return { code: 'not_object', why: 'the payload is not a JSON object' };
  if (!('v' in m)) return { code: 'missing_field', why: 'v' };
  if (m.v !== 2) return { code: 'wrong_version', why: `v${JSON.stringify(m.v)} payload; this peer speaks protocol v2 only` };
  const type = m.type ?? 'record_start';
  if (!(type in FIELDS)) return { code: 'wrong_type', why: `${JSON.stringify(type)} on a command topic` };
  for (const [name, ok, required] of FIELDS[type]) {
    if (m[name] === undefined) {
      if (required) return { code: 'missing_field', why: name };
    } else if (!ok(m[name])) return { code: 'invalid_field', why: name };
  }
  return { msg: { ...m, type } };
}

function parseJson(bytes) {
  try {
    return { value: JSON.parse(utf8(bytes)) };
  } catch {
    return { code: 'not_json', why: 'not UTF-8 JSON' };
  }
}

/** A token bucket on the camera's clock (ns). */
class Budget {
  constructor(perSecond, burst) { Object.assign(this, { perSecond, burst, tokens: burst, at: null }); }
  take(now) {
    const refill = this.at === null ? 0 : (Number(now - this.at) / 1e9) * this.perSecond;
    this.tokens = Math.min(this.burst, this.tokens + refill);
    this.at = now;
    return this.tokens >= 1 ? (this.tokens -= 1, true) : false;
  }
}

// --- the camera: protocol.md "What a camera must do with a record_start", "Cancelling" ----------
export class Camera {
  /** publish(topic, bytes, {retain}) sends; log(object) writes one decision; clock() is ns (BigInt). */
  constructor(o) {
    Object.assign(this, {
      prefix: 'mesh/v2', role: 'body', groups: [], position: null, asleep: false, trust: null, signingKey: null,
      requireSigned: true, maxClockSkewS: 5, maxCommandValidityS: 600, preEventBufferS: 120, recordS: 300,
      clock: () => WALL + process.hrtime.bigint(), publish: () => {}, onChange: () => {},
      log: (line) => console.log(JSON.stringify(line)),
    }, o);
    this.kid = this.signingKey ? keyIdOf(publicHexOf(this.signingKey)) : null;
    this.bufferSinceNs = this.clock(); // the pre-event buffer fills from power-on
    this.recording = false;
    this.claims = new Map(); // activation_id → Map(issuer → claim), oldest first
    this.onRecording = new Set(); // "activation_id issuer" of the claims on the running recording
    this.signatures = new Map(); // JWS signature → expires_at_ns, oldest first
    this.refusals = new Budget(10, 10); // rejected acks and refused cancel_acks: 10 a second
  }

  get cell() { return this.position ? geohash(this.position.lat, this.position.lon, 6) : null; }

  presence(online, now = this.clock()) {
    const p = this.position;
    return JSON.stringify({
      type: 'presence', v: 2, camera_id: this.id, unit_id: this.unit, role: this.role, online,
      recording: this.recording,
      position: p ? { lat: p.lat, lon: p.lon, accuracy_m: p.accuracy_m ?? 5, fix_at_ns: String(p.fix_at_ns ?? now) } : null,
      last_seen_ns: String(now), groups: this.groups, asleep: this.asleep,
    });
  }

  /** One message read on a lane: 'own' (cmd/camera/<id>), 'unit', 'cell' or 'all'. */
  handle(lane, bytes) {
    const now = this.clock();
    const drop = (code, why, msg) => this.note(lane, msg, 'dropped', `${code}: ${why}`);
    if (bytes.length > MAX_COMMAND_BYTES) return drop('too_large', `${bytes.length} bytes`);
    const outer = parseJson(bytes);
    if (outer.code) return drop(outer.code, outer.why);
    let read;
    let key = null;
    let signature = null;
    if (isObj(outer.value) && 'signature' in outer.value) { // a JWS: verify, only then parse
      let payloadBytes;
      if (this.trust) {
        const opened = openJws(outer.value, this.trust);
        if (opened.code) return drop(opened.code, opened.why);
        [key, signature, payloadBytes] = [opened.key, outer.value.signature, opened.bytes];
      } else if (isB64url(outer.value.payload)) {
        payloadBytes = Buffer.from(outer.value.payload, 'base64url'); // without a trust store: unchecked
      } else return drop('bad_jws', 'no payload');
      const inner = parseJson(payloadBytes);
      read = inner.code ? inner : readCommand(inner.value);
    } else read = readCommand(outer.value);
    if (read.code) return drop(read.code, read.why);
    const msg = read.msg;
    if (msg.type === 'record_cancel') return this.cancel(lane, msg, key, now);
    return this.start(lane, msg, key, signature, now);
  }

  /** security.md steps 5–7 for a record_start: [code, why] of a refusal, or null. */
  checks(cmd, key, now) {
    if (!this.trust) return null;
    if (!key) return this.requireSigned ? ['unsigned', 'this camera accepts signed commands only'] : null;
    const refusal = signerRefusal(key, cmd) ?? keyRefusal(key, now);
    if (refusal) return refusal;
    const [issued, expires] = [BigInt(cmd.issued_at_ns), BigInt(cmd.expires_at_ns)];
    if (issued > now + BigInt(this.maxClockSkewS) * S) {
      return ['issued_in_future', `issued ${(issued - now) / MS} ms ahead of this camera's clock`];
    }
    if (expires - issued > BigInt(this.maxCommandValidityS) * S) {
      return ['validity_too_long', `valid for ${(expires - issued) / MS} ms, over ${this.maxCommandValidityS} s`];
    }
    return null;
  }

  start(lane, cmd, key, signature, now) {
    const own = lane === 'own';
    const expires = BigInt(cmd.expires_at_ns);
    if ((lane === 'cell' || lane === 'all') && now > expires) return this.note(lane, cmd, 'dropped', 'expired (shared)');
    const refusal = this.checks(cmd, key, now);
    if (refusal) return this.ack(lane, cmd, 'rejected', `${refusal[0]}: ${refusal[1]}`, now);
    let claim = this.claims.get(cmd.activation_id)?.get(cmd.issuer);
    const replayed = signature !== null && (this.signatures.get(signature) ?? -1n) >= now; // until expiry
    if (replayed && !claim) {
      if (!own) return this.note(lane, cmd, 'ignored', 'replayed: a signed command received before');
      return this.ack(lane, cmd, 'rejected', 'replayed: this signed command was received before', now);
    }
    if (signature !== null && !replayed && now <= expires) this.remember(signature, expires, now);
    const scope = this.scope(cmd);
    if (!scope.concerned && !own) return this.note(lane, cmd, 'ignored', `not concerned: ${scope.reason}`); // 1
    if (claim) { // step 2: this issuer's claim on this id
      if (!own) return this.note(lane, cmd, 'ignored', 'duplicate on a shared topic');
      if (claim.cancelled) return this.ack(lane, cmd, 'rejected', 'this activation was cancelled by its issuer', now);
      if (this.recording) {
        this.onRecording.add(`${cmd.activation_id} ${cmd.issuer}`);
        return this.ack(lane, cmd, 'already_recording', 'duplicate command for this activation', now);
      }
      if (replayed) return this.ack(lane, cmd, 'rejected', 'replayed: received before; its recording has ended', now);
    }
    if (now > expires) return this.ack(lane, cmd, 'rejected', `command expired ${(now - expires) / MS} ms ago`, now);
    if (!scope.concerned) return this.ack(lane, cmd, 'out_of_range', scope.reason, now); // 4
    claim = this.claim(cmd);
    this.onRecording.add(`${cmd.activation_id} ${cmd.issuer}`);
    if (this.recording) return this.ack(lane, cmd, 'already_recording', `already recording; ${scope.reason}`, now);
    this.setRecording(true); // 6
    return this.ack(lane, cmd, 'started', scope.reason, now, {
      recording_started_at_ns: String(now), pre_event_kept_s: this.preEventKeptS(now, cmd.pre_event_s),
    });
  }

  /** protocol.md "A camera then decides whether it is concerned". */
  scope(cmd) {
    const t = cmd.targets;
    const [roles, groups] = [cmd.roles ?? [], cmd.groups ?? []];
    let s;
    if ((t.cameras ?? []).includes(this.id)) s = { concerned: true, reason: `camera ${this.id} named` };
    else if (roles.length && !roles.includes(this.role)) s = { concerned: false, reason: `role ${this.role} not in it` };
    else if (groups.length && !groups.some((g) => this.groups.includes(g))) {
      s = { concerned: false, reason: `none of its groups in ${groups}` };
    }
    else if ((t.units ?? []).includes(this.unit)) s = { concerned: true, reason: `unit ${this.unit} targeted` };
    else if (cmd.origin && cmd.radius_m > 0 && this.position) {
      const d = haversineM(cmd.origin.lat, cmd.origin.lon, this.position.lat, this.position.lon);
      s = d <= cmd.radius_m
        ? { concerned: true, reason: `in range: ${d.toFixed(1)} m from the origin, radius ${cmd.radius_m} m` }
        : { concerned: false, reason: `out of range: ${d.toFixed(1)} m from the origin, radius ${cmd.radius_m} m` };
    } else s = { concerned: false, reason: `not targeted, and ${this.position ? 'the command has no circle' : 'no fix'}` };
    if (s.concerned && this.asleep && cmd.wake === false) s = { concerned: false, reason: 'asleep, and not to wake' };
    return s;
  }

  /** Frames at power-on + k/30 s in the last min(pre_event_s, buffer) seconds before the start. */
  preEventKeptS(startNs, preEventS) {
    const up = startNs - this.bufferSinceNs;
    const win = BigInt(Math.min(preEventS, this.preEventBufferS)) * S;
    const ceil = (a) => (a <= 0n ? 0n : (a + S - 1n) / S);
    const frames = ceil(30n * up) - ceil(30n * (up - win));
    return Math.round((Number(frames) * 1000) / 30) / 1000;
  }

  claim(cmd) {
    let byIssuer = this.claims.get(cmd.activation_id);
    if (!byIssuer) {
      this.claims.set(cmd.activation_id, (byIssuer = new Map()));
      if (this.claims.size > 4096) this.claims.delete(this.claims.keys().next().value); // oldest id
    }
    if (!byIssuer.has(cmd.issuer)) {
      byIssuer.set(cmd.issuer, { // from the first command of this issuer it acted on
        issuedAt: BigInt(cmd.issued_at_ns),
        cancelUntil: cmd.cancel_until_ns ? BigInt(cmd.cancel_until_ns) : null,
        cancelled: false,
      });
      if (byIssuer.size > 8) byIssuer.delete(byIssuer.keys().next().value);
    }
    return byIssuer.get(cmd.issuer);
  }

  remember(signature, expires, now) {
    for (const [sig, until] of this.signatures) if (until < now) this.signatures.delete(sig); else break;
    this.signatures.set(signature, expires);
    if (this.signatures.size > 8192) this.signatures.delete(this.signatures.keys().next().value);
  }

  setRecording(on) {
    if (this.recording === on) return;
    this.recording = on;
    clearTimeout(this.stopTimer);
    if (on) this.stopTimer = setTimeout(() => this.setRecording(false), this.recordS * 1000).unref?.();
    else this.onRecording.clear();
    this.onChange();
  }

  /** protocol.md "Cancelling a false trigger". */
  cancel(lane, c, key, now) {
    const claims = this.claims.get(c.activation_id);
    if (!claims) return this.note(lane, c, 'ignored', 'cancel of an activation it did not act on');
    const mine = claims.get(c.issuer);
    if (mine?.cancelled) return this.note(lane, c, 'ignored', 'its issuer cancelled this claim already');
    const at = BigInt(c.at_ns);
    let refusal = null;
    if (this.trust && key) refusal = signerRefusal(key, c) ?? keyRefusal(key, now);
    else if (this.trust && this.requireSigned) refusal = ['unsigned', 'this camera accepts signed cancels only'];
    const holders = [...claims.keys()].join(', ');
    refusal ??= !mine
      ? ['not_issuer', `cancel issued by ${c.issuer}; only ${holders}, whose command started this recording, may cancel it`]
      : mine.cancelUntil === null ? ['not_cancellable', 'its command carried no cancel_until_ns']
      : now > mine.cancelUntil || at > mine.cancelUntil ? ['deadline_passed', `its deadline ${mine.cancelUntil} has passed`]
      : at < mine.issuedAt ? ['before_command', `cancel dated before its command (${mine.issuedAt})`]
      : null;
    if (refusal) {
      for (const to of mine ? [c.issuer] : claims.keys()) this.cancelAck(lane, c, to, 'refused', refusal.join(': '), now);
      return undefined;
    }
    mine.cancelled = true;
    this.onRecording.delete(`${c.activation_id} ${c.issuer}`);
    const stop = this.recording && this.onRecording.size === 0;
    if (stop) this.setRecording(false);
    const why = stop ? 'recording stopped (kept)' : this.recording ? 'another claim wants the recording' : 'it had ended';
    return this.cancelAck(lane, c, c.issuer, stop ? 'stopped' : 'kept_recording', why, now);
  }

  // --- answers ---------------------------------------------------------------------------------
  ack(lane, cmd, status, reason, now, extra = {}) {
    const body = {
      type: 'ack', v: 2, activation_id: cmd.activation_id, camera_id: this.id, unit_id: this.unit, status,
      reason: reason.slice(0, 512), attempt: cmd.attempt ?? 0, received_at_ns: String(now), ...extra,
    };
    return this.answer(lane, cmd, cmd.issuer, body, status === 'rejected', status);
  }

  cancelAck(lane, c, to, outcome, reason, now) {
    const body = {
      type: 'cancel_ack', v: 2, activation_id: c.activation_id, camera_id: this.id, unit_id: this.unit, outcome,
      reason: reason.slice(0, 512), cancel_issuer: c.issuer, cancel_at_ns: c.at_ns, received_at_ns: String(now),
    };
    return this.answer(lane, c, to, body, outcome === 'refused', `cancel_${outcome}`);
  }

  answer(lane, msg, to, body, refusal, decision) {
    if (refusal && !this.refusals.take(this.clock())) {
      return this.note(lane, msg, decision, `${body.reason} (not answered: over 10 refusals a second)`);
    }
    const bytes = Buffer.from(JSON.stringify(body));
    const signed = this.signingKey ? Buffer.from(signJws(bytes, this.signingKey, this.kid)) : bytes;
    this.publish(`${this.prefix}/ack/${to}/${this.id}`, signed, { retain: false });
    return this.note(lane, msg, decision, body.reason, to);
  }

  note(lane, msg, decision, reason, to) {
    const line = { at_ns: String(this.clock()), camera_id: this.id, lane, type: msg?.type };
    Object.assign(line, { activation_id: msg?.activation_id, issuer: msg?.issuer, decision, reason });
    if (to !== undefined && to !== msg?.issuer) line.to = to;
    this.log(line);
    return line;
  }
}

// --- MQTT: protocol.md "A camera under a flood of commands" (three connections) ------------------
async function main(argv) {
  const names = ['broker', 'prefix', 'id', 'unit', 'lat', 'lon', 'role', 'key', 'trust', 'client-id', 'groups',
    'record-s', 'max-clock-skew-s', 'max-command-validity-s', 'heartbeat-s', 'fix-file'];
  const o = {}; // --name value (values may start with '-': a western longitude)
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, '');
    if (name === 'allow-unsigned') o[name] = true;
    else if (names.includes(name) && i + 1 < argv.length) o[name] = argv[++i];
    else throw new Error(`unknown or incomplete option ${argv[i]} (README.md lists them)`);
  }
  for (const need of ['broker', 'id', 'unit']) if (!o[need]) throw new Error(`--${need} is required`);
  const { default: mqtt } = await import('mqtt');
  const trust = o.trust ? loadTrustStore(parseTrustYaml(readFileSync(o.trust, 'utf8'), o.trust), o.trust) : null;
  if (!trust) console.error(`warning: no --trust: camera ${o.id} checks no signature`);
  const clients = {};
  const camera = new Camera({
    id: o.id, unit: o.unit, prefix: o.prefix ?? 'mesh/v2', role: o.role ?? 'body', trust,
    groups: o.groups ? o.groups.split(',') : [],
    position: o.lat !== undefined && o.lon !== undefined ? { lat: Number(o.lat), lon: Number(o.lon), accuracy_m: 5 } : null,
    signingKey: o.key ? createPrivateKey(readFileSync(o.key)) : null, requireSigned: !o['allow-unsigned'],
    maxClockSkewS: Number(o['max-clock-skew-s'] ?? 5), maxCommandValidityS: Number(o['max-command-validity-s'] ?? 600),
    recordS: Number(o['record-s'] ?? 300),
    publish: (topic, bytes, { retain }) => clients.main.publish(topic, bytes, { qos: 1, retain }),
  });
  const p = camera.prefix;
  const presenceTopic = `${p}/presence/${o.id}`;
  let pending = null; // presence changes are coalesced for 0.5 s: at most 2 a second
  const announce = () => {
    pending ??= setTimeout(() => {
      pending = null;
      clients.main.publish(presenceTopic, camera.presence(true), { qos: 1, retain: true });
    }, 500);
  };
  camera.onChange = announce;
  const base = o['client-id'] ?? `tm-cam-${o.id}`;
  const will = () => ({ topic: presenceTopic, payload: Buffer.from(camera.presence(false)), qos: 1, retain: true });
  const connect = (name, clientId, extra, topics, onConnect) => {
    const c = mqtt.connect(o.broker, { clientId, clean: false, keepalive: 15, protocolVersion: 4, ...extra });
    c.on('connect', async () => {
      try {
        await onConnect?.(c);
        await c.subscribeAsync(Object.fromEntries(topics().map((t) => [t, { qos: 1 }])));
        ready.add(name);
        const line = { at_ns: String(camera.clock()), camera_id: o.id, decision: 'ready', cell: camera.cell };
        if (ready.size === 3) camera.log(line);
      } catch (err) { console.error(`${clientId}: ${err.message}`); }
    });
    c.on('error', (err) => console.error(`${clientId}: ${err.message}`));
    return c;
  };
  const ready = new Set();
  const cellTopic = () => `${p}/cmd/cell/${camera.cell}`;
  clients.main = connect('main', base, { protocolVersion: 5, properties: { sessionExpiryInterval: 600 }, will: will() },
    () => [`${p}/cmd/unit/${o.unit}`, ...(camera.cell ? [cellTopic()] : [])],
    async (c) => {
      await c.unsubscribeAsync([`${p}/cmd/all`, `${p}/cmd/camera/${o.id}`]); // left by an older session
      c.publish(presenceTopic, camera.presence(true), { qos: 1, retain: true });
    });
  clients.main.on('reconnect', () => { clients.main.options.will = will(); }); // last_seen_ns: this connection
  clients.main.on('error', (err) => { // a broker without MQTT 5: 3.1.1, clean_session=false
    if ((err.code === 1 || err.code === 132) && clients.main.options.protocolVersion === 5) {
      Object.assign(clients.main.options, { protocolVersion: 4, properties: undefined });
      clients.main.reconnect();
    }
  });
  clients.own = connect('own', `${base}-own`, {}, () => [`${p}/cmd/camera/${o.id}`]);
  clients.all = connect('all', `${base}-all`, {}, () => [`${p}/cmd/all`]);
  for (const [lane, c] of Object.entries({ main: clients.main, own: clients.own, all: clients.all })) {
    c.on('message', (topic, bytes) => {
      const shared = topic.startsWith(`${p}/cmd/cell/`) ? 'cell' : topic.startsWith(`${p}/cmd/unit/`) ? 'unit' : null;
      const kind = lane === 'main' ? shared : lane;
      if (kind) camera.handle(kind, bytes);
    });
  }
  // A new fix: the new cell is subscribed before the old one is left, then announced.
  const move = async (lat, lon) => {
    if (!(Math.abs(lat) <= 90 && Math.abs(lon) <= 180)) return;
    const before = camera.cell;
    camera.position = { lat, lon, accuracy_m: 5 };
    if (camera.cell !== before) {
      await clients.main.subscribeAsync(cellTopic(), { qos: 1 });
      if (before) await clients.main.unsubscribeAsync(`${p}/cmd/cell/${before}`);
    }
    camera.log({ at_ns: String(camera.clock()), camera_id: o.id, decision: 'moved', cell: camera.cell });
    announce();
  };
  // `move LAT LON` on stdin.
  process.stdin.setEncoding('utf8').on('data', async (text) => {
    for (const [, lat, lon] of text.matchAll(/^move\s+(\S+)\s+(\S+)\s*$/gm)) await move(Number(lat), Number(lon));
  });
  // --fix-file F: `LAT LON` in F, read every 0.2 s (at start-up too), as a GPS simulator writes it.
  let fixText = null;
  const gps = o['fix-file'] && setInterval(() => {
    let text;
    try { text = readFileSync(o['fix-file'], 'utf8'); } catch { return; } // not there yet
    const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(text);
    if (text === fixText || !m) return; // unchanged, or not a fix (half written): read again
    fixText = text;
    move(Number(m[1]), Number(m[2])).catch((err) => console.error(`move: ${err.message}`));
  }, 200);
  const heartbeat = setInterval(announce, Number(o['heartbeat-s'] ?? 30) * 1000);
  const stop = () => {
    clearInterval(heartbeat);
    clearInterval(gps);
    clearTimeout(pending);
    process.stdin.destroy();
    clients.main.publish(presenceTopic, camera.presence(false), { qos: 1, retain: true }, () => {
      for (const c of Object.values(clients)) c.end();
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err) => { console.error(`error: ${err.message}`); process.exit(2); });
}
