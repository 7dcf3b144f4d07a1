"""A protocol v2 camera written only from docs/protocol.md and docs/security.md, with paho-mqtt
(and, signed, `cryptography` and PyYAML) and nothing of this repository.

usage: python paho_camera.py HOST PORT PREFIX CAMERA_ID UNIT_ID LAT LON [KEY_PEM TRUST_YAML]
                             [--fix-file FILE]

With KEY_PEM and TRUST_YAML it accepts only commands signed by their issuer's key (a JWS,
checked before it is parsed) and signs its answers. With --fix-file its GPS fix is the line
`LAT LON` in FILE, read every 0.2 s (at start-up too): a new fix moves its cell subscription
and is announced. The conformance kit moves it with --move-cmd "sh -c 'echo {lat} {lon} > FILE'".

It decides as protocol.md's "What a camera must do with a record_start", "Claims", "What a
camera remembers" and "Cancelling a false trigger" say; refusals go out at most 10 a second,
presence on connect, on a move, on each start and stop and every 30 s, at most 2 a second.
Short by design, it leaves out the SHOULDs of "A camera under a flood of commands" (one
connection, not three; no persistent session; no intake lanes) and the memory bounds, and it
records nothing: its recording never ends on its own and keeps no pre-event video
(pre_event_kept_s: 0). docs/examples/node-camera/ is a whole camera."""
import argparse
import base64
import hashlib
import json
import math
import re
import time
from collections import deque
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

parser = argparse.ArgumentParser(description="A protocol v2 camera (docs/protocol.md).")
for name in ("host", "port", "prefix", "camera_id", "unit_id", "lat", "lon"):
    parser.add_argument(name)
parser.add_argument("key", nargs="?", help="its Ed25519 key (PKCS#8 PEM): signed mode")
parser.add_argument("trust", nargs="?", help="the trust store (YAML): signed mode")
parser.add_argument("--fix-file", help="a file holding its fix, `LAT LON`, read every 0.2 s")
args = parser.parse_args()
p, cam, unit, fix = args.prefix, args.camera_id, args.unit_id, (float(args.lat), float(args.lon))
claims = {}  # (activation_id, issuer) -> the claim: what it acted on, and whether it was cancelled
seen = {}  # signature -> expires_at_ns of every signed command that passed its checks
refusals = deque(maxlen=10)  # when the last 10 refusals went out
recording = dirty = False  # dirty: its presence changed and is to be published again
key = trust = None


def kid_of(public_hex):
    """key_id: SHA-256 of the public key's 64 lowercase hex digits, its first 16 hex digits."""
    return hashlib.sha256(public_hex.encode()).hexdigest()[:16]


if args.trust:  # signed mode
    import yaml
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(args.key).read_bytes(), None)
    kid = kid_of(key.public_key().public_bytes_raw().hex())
    trust = {k["key_id"]: k for k in yaml.safe_load(Path(args.trust).read_text())["keys"]}
    for k in trust.values():
        if kid_of(k["public_key"]) != k["key_id"]:
            raise SystemExit(f"{args.trust}: key_id {k['key_id']} does not match its public key")


def presence(online):
    now = str(time.time_ns())  # *_ns times are strings of decimal digits
    return json.dumps({"type": "presence", "v": 2, "camera_id": cam, "unit_id": unit,
                       "role": "body", "online": online, "recording": recording,
                       "position": {"lat": fix[0], "lon": fix[1], "fix_at_ns": now},
                       "last_seen_ns": now})


def distance_m(a, b, c, d):
    h = math.sin((math.radians(c) - math.radians(a)) / 2) ** 2 + math.cos(math.radians(a)) \
        * math.cos(math.radians(c)) * math.sin(math.radians(d - b) / 2) ** 2
    return 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(h)))


def geohash(lat, lon, chars=6):
    """The cell: bisect longitude and latitude in turn, 5 bits per base-32 character."""
    box, code, bits = [[-180.0, 180.0], [-90.0, 90.0]], "", 0
    for k in range(5 * chars):
        span, value = box[k % 2], (lon, lat)[k % 2]
        mid = (span[0] + span[1]) / 2
        bits = bits * 2 + (value >= mid)
        span[value < mid] = mid
        if k % 5 == 4:
            code, bits = code + "0123456789bcdefghjkmnpqrstuvwxyz"[bits], 0
    return code


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64(data) != text:  # one spelling per value (security.md): else a replay in disguise
        raise ValueError("not canonical base64url")
    return data


def open_jws(env):
    """security.md "How a receiver checks a signed message", steps 1-3: None = drop, no answer."""
    try:
        head = json.loads(unb64(env["protected"]))
        if head["alg"] not in ("EdDSA", "Ed25519") or head["typ"] != "trigger-mesh+json" \
                or "crit" in head or len(env["signature"]) != 86:
            return None  # bad_jws
        signer = trust[head["kid"]]  # KeyError: unknown_key
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer["public_key"]))
        public.verify(unb64(env["signature"]), f"{env['protected']}.{env['payload']}".encode())
        return signer, unb64(env["payload"])  # verified: only now is the payload parsed
    except Exception:  # bad_jws, unknown_key, bad_signature
        return None


def ns(time_text):
    """A trust store time (RFC 3339 with its offset) in ns since the epoch."""
    return datetime.fromisoformat(str(time_text)).timestamp() * 1e9


def signer_refusal(signer, msg, now):
    """Steps 5 and 6: may this key sign this command, now? The reason of a refusal, or None."""
    if signer is None:
        return "unsigned: this camera accepts signed commands only"
    may = ("gateway", "dispatch") if msg["type"] == "record_start" else ("gateway",)
    if signer["role"] not in may or signer["subject"] != msg["issuer"]:
        return f"wrong_signer: key {signer['key_id']} may not sign for {msg['issuer']}"
    for field, code in (("revoked_at", "key_revoked"), ("not_after", "key_expired")):
        if signer.get(field) and now >= ns(signer[field]):
            return f"{code}: key {signer['key_id']}"
    if signer.get("not_before") and now < ns(signer["not_before"]):
        return f"key_not_yet_valid: key {signer['key_id']}"
    return None


def command_refusal(signer, cmd, now):
    """Steps 5-7 for a record_start (the replay memory is the caller's)."""
    why = signer_refusal(signer, cmd, now)
    if why is None and int(cmd["issued_at_ns"]) > now + 5 * 10**9:
        why = "issued_in_future: more than 5 s ahead of this camera's clock"
    if why is None and int(cmd["expires_at_ns"]) - int(cmd["issued_at_ns"]) > 600 * 10**9:
        why = "validity_too_long: more than 600 s"
    return why


def scope(cmd):
    """protocol.md "A camera then decides whether it is concerned": (concerned, why)."""
    t, o, r = cmd["targets"], cmd["origin"], cmd["radius_m"]
    if cam in t.get("cameras", []):
        return True, f"camera {cam} named"
    if (cmd.get("roles") and "body" not in cmd["roles"]) or cmd.get("groups"):
        return False, "filtered out by roles or groups"  # it is a body camera of no group
    if unit in t.get("units", []):
        return True, f"unit {unit} targeted"
    if o is None or r <= 0:
        return False, "not targeted, and the command has no circle"
    d = distance_m(o["lat"], o["lon"], *fix)
    where = "in" if d <= r else "out of"
    return d <= r, f"{where} range: {d:.0f} m from the origin, radius {r:g} m"


def answer(client, to, body):
    """An ack or cancel_ack to {p}/ack/{to}/{cam}, signed in signed mode; a refusal goes out
    only if fewer than 10 went out in the last second."""
    if body.get("status") == "rejected" or body.get("outcome") == "refused":
        if len(refusals) == 10 and time.monotonic() - refusals[0] < 1:
            return
        refusals.append(time.monotonic())
    data = json.dumps(body).encode()
    if key is not None:  # a JWS of the answer's exact bytes (flattened JSON, EdDSA)
        head = b64(json.dumps({"alg": "EdDSA", "kid": kid, "typ": "trigger-mesh+json"}).encode())
        body = b64(data)
        signature = b64(key.sign(f"{head}.{body}".encode()))
        data = json.dumps({"protected": head, "payload": body, "signature": signature}).encode()
    client.publish(f"{p}/ack/{to}/{cam}", data, qos=1)


def ack(client, cmd, status, reason, now):
    body = {"type": "ack", "v": 2, "activation_id": cmd["activation_id"], "camera_id": cam,
            "unit_id": unit, "status": status, "reason": reason,
            "attempt": cmd.get("attempt", 0), "received_at_ns": str(now)}
    if status == "started":
        body |= {"recording_started_at_ns": str(now), "pre_event_kept_s": 0.0}
    answer(client, cmd["issuer"], body)


def on_record_start(client, cmd, signer, sig, lane, now):
    """protocol.md "What a camera must do with a record_start", in its order."""
    global recording, dirty
    expires, own = int(cmd["expires_at_ns"]), lane == "camera"
    claim, (concerned, why) = claims.get((cmd["activation_id"], cmd["issuer"])), scope(cmd)
    if trust is not None:  # security.md steps 5-7: a refused command is acted on in no way
        refused = command_refusal(signer, cmd, now)
        if refused:
            return ack(client, cmd, "rejected", refused, now)
        replayed = sig in seen
        for old in [s for s, until in seen.items() if until < now]:
            del seen[old]
        if sig is not None and now <= expires:
            seen[sig] = expires  # remembered until it expires, acted on or not
        if replayed and claim is None:  # never acted on twice
            why = "replayed: this signed command was received before"
            return ack(client, cmd, "rejected", why, now) if own else None
    if not concerned and not own:
        return None  # 1. not concerned, on a shared topic: silence
    if claim is not None:  # 2. this issuer's claim (it stops only once no claim is live)
        if not own:
            return None
        if claim["cancelled"]:
            return ack(client, cmd, "rejected", "this activation was cancelled by its issuer", now)
        return ack(client, cmd, "already_recording", "duplicate command for this activation", now)
    if now > expires:  # 3. expired: dropped on the cell and cmd/all topics
        if lane in ("cell", "all"):
            return None
        why = f"command expired {(now - expires) // 10**6} ms ago"
        return ack(client, cmd, "rejected", why, now)
    if not concerned:  # 4. asked directly
        return ack(client, cmd, "out_of_range", why, now)
    claims[(cmd["activation_id"], cmd["issuer"])] = {  # 5, 6: join or start, as this claim
        "issued": int(cmd["issued_at_ns"]), "cancelled": False,
        "until": None if cmd.get("cancel_until_ns") is None else int(cmd["cancel_until_ns"])}
    if recording:
        return ack(client, cmd, "already_recording", f"already recording; {why}", now)
    recording = dirty = True
    return ack(client, cmd, "started", why, now)


def cancel_refusal(signer, c, mine, holders, now):
    """The checks of a record_cancel, in their order: the reason of a refusal, or None."""
    at = int(c["at_ns"])
    if trust is not None and (why := signer_refusal(signer, c, now)):
        return why  # unsigned, wrong_signer, key_*
    if mine is None:
        return f"not_issuer: issued by {c['issuer']}; only {', '.join(holders)} may cancel it"
    if mine["until"] is None:
        return "not_cancellable: its command carried no cancel_until_ns"
    if max(now, at) > mine["until"]:
        return f"deadline_passed: its deadline {mine['until']} has passed"
    if at < mine["issued"]:
        return f"before_command: dated before its command ({mine['issued']})"
    return None


def on_record_cancel(client, c, signer, now):
    """protocol.md "Cancelling a false trigger"."""
    global recording, dirty
    held = {i: claim for (a, i), claim in claims.items() if a == c["activation_id"]}
    mine = held.get(c["issuer"])
    if not held or (mine is not None and mine["cancelled"]):
        return  # an activation it did not act on, or a cancel already obeyed: silence
    why, outcome = cancel_refusal(signer, c, mine, held, now), "refused"
    if why is None:  # obeyed: this claim ends; the recording stops when no claim is left
        mine["cancelled"] = True
        stop = all(claim["cancelled"] for claim in claims.values())
        recording, dirty = not stop, dirty or stop
        outcome = "stopped" if stop else "kept_recording"
        why = "recording stopped" if stop else "another claim wants the recording"
    for to in [c["issuer"]] if mine is not None else held:  # a refusal tells each claim's issuer
        answer(client, to, {"type": "cancel_ack", "v": 2, "activation_id": c["activation_id"],
                            "camera_id": cam, "unit_id": unit, "outcome": outcome, "reason": why,
                            "cancel_issuer": c["issuer"], "cancel_at_ns": c["at_ns"],
                            "received_at_ns": str(now)})


NS = re.compile(r"0|[1-9][0-9]{0,18}")
REQUIRED = {"record_start": ("activation_id", "issuer", "issued_at_ns", "expires_at_ns",
                             "origin", "radius_m", "targets"),
            "record_cancel": ("activation_id", "issuer", "at_ns")}


def times_ok(value):
    """Every *_ns time a string of decimal digits below 2^63 (cancel_until_ns may be null)."""
    if isinstance(value, list):
        return all(map(times_ok, value))
    if not isinstance(value, dict):
        return True
    for k, v in value.items():
        if k.endswith("_ns") and not (v is None and k == "cancel_until_ns") \
                and not (isinstance(v, str) and NS.fullmatch(v) and int(v) < 2**63):
            return False  # a JSON number, say: invalid_field
    return all(map(times_ok, value.values()))


def read(payload):
    """A command's bytes -> (command, signer, signature), or None: dropped, never answered."""
    if len(payload) > 16384:
        return None  # too_large
    env, signer, sig = json.loads(payload), None, None
    if isinstance(env, dict) and "signature" in env:  # a JWS: verify the bytes, then parse them
        if trust is None:  # no trust store: its payload, read unchecked
            env = json.loads(unb64(env["payload"]))
        else:
            opened = open_jws(env)
            if opened is None:
                return None
            signer, sig, env = opened[0], env["signature"], json.loads(opened[1])
    if not isinstance(env, dict) or env.get("v") != 2 or not times_ok(env):
        return None  # wrong_version, invalid_field
    env.setdefault("type", "record_start")
    if env["type"] not in REQUIRED or any(f not in env for f in REQUIRED[env["type"]]):
        return None  # wrong_type, missing_field
    return env, signer, sig


def on_connect(client, userdata, flags, reason, properties):
    client.publish(f"{p}/presence/{cam}", presence(True), qos=1, retain=True)
    client.subscribe([(f"{p}/cmd/all", 1), (f"{p}/cmd/cell/{geohash(*fix)}", 1),
                      (f"{p}/cmd/unit/{unit}", 1), (f"{p}/cmd/camera/{cam}", 1)])


def on_message(client, userdata, msg):
    now, lane = time.time_ns(), msg.topic[len(p) + 5:].split("/")[0]  # cell, unit, camera, all
    try:
        cmd, signer, sig = read(msg.payload) or (None, None, None)
        if cmd is not None and cmd["type"] == "record_start":
            on_record_start(client, cmd, signer, sig, lane, now)
        elif cmd is not None:
            on_record_cancel(client, cmd, signer, now)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # not_json, or a field of the wrong shape: dropped


def move(lat, lon):
    """A new fix: subscribe to its cell before leaving the old one, then announce it."""
    global fix, dirty
    old, new, fix = geohash(*fix), geohash(lat, lon), (lat, lon)
    if new != old:
        client.subscribe(f"{p}/cmd/cell/{new}", 1)
        client.unsubscribe(f"{p}/cmd/cell/{old}")
    dirty = True


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{cam}")
client.will_set(f"{p}/presence/{cam}", presence(False), qos=1, retain=True)
client.on_connect, client.on_message = on_connect, on_message
client.connect(args.host, int(args.port))
client.loop_start()  # MQTT in a thread of its own; this one reads the GPS and announces
fix_text, announced = None, time.monotonic()
while True:
    time.sleep(0.2)
    if args.fix_file:
        try:
            text = Path(args.fix_file).read_text()
            if text != fix_text:
                fix_text = text
                move(*map(float, text.split()))
        except (OSError, ValueError, TypeError):
            pass  # no file yet, or not a fix (half written): read again in 0.2 s
    since = time.monotonic() - announced
    if (dirty and since >= 0.5) or since >= 30:  # changes coalesced: at most 2 a second
        dirty, announced = False, time.monotonic()
        client.publish(f"{p}/presence/{cam}", presence(True), qos=1, retain=True)
