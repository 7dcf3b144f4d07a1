"""A protocol v2 camera written only from docs/protocol.md and docs/security.md, with paho-mqtt
(and, signed, `cryptography` and PyYAML) and nothing of this repository.
usage: python paho_camera.py HOST PORT PREFIX CAMERA_ID UNIT_ID LAT LON [KEY_PEM TRUST_YAML]
With KEY_PEM and TRUST_YAML it accepts only commands signed by their issuer's key (JWS, checked
before parsing) and signs its acks. Short by design: one connection, no record_cancel, no
rate limits; docs/examples/node-camera/ is a whole camera."""
import base64
import hashlib
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

host, port, p, cam, unit, lat, lon = sys.argv[1:8]
lat, lon, claims, seen, recording = float(lat), float(lon), set(), {}, False
key = trust = None
if len(sys.argv) > 9:  # signed mode
    import yaml
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(sys.argv[8]).read_bytes(), None)
    trust = {k["key_id"]: k for k in yaml.safe_load(Path(sys.argv[9]).read_text())["keys"]}
    kid = hashlib.sha256(key.public_key().public_bytes_raw().hex().encode()).hexdigest()[:16]


def presence(online):
    now = str(time.time_ns())  # *_ns times are strings of decimal digits
    return json.dumps({"type": "presence", "v": 2, "camera_id": cam, "unit_id": unit,
                       "role": "body", "online": online, "recording": recording,
                       "position": {"lat": lat, "lon": lon, "fix_at_ns": now}, "last_seen_ns": now})


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
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


def refusal(signer, cmd, now):
    """Steps 5-7 for a record_start: the reason of a refusal, or None."""
    if signer is None:
        return "unsigned: this camera accepts signed commands only"
    if signer["role"] not in ("gateway", "dispatch") or signer["subject"] != cmd["issuer"]:
        return f"wrong_signer: key {signer['key_id']} may not command as {cmd['issuer']}"
    for field, code in (("revoked_at", "key_revoked"), ("not_after", "key_expired")):
        if signer.get(field) and now >= ns(signer[field]):
            return f"{code}: key {signer['key_id']}"
    if signer.get("not_before") and now < ns(signer["not_before"]):
        return f"key_not_yet_valid: key {signer['key_id']}"
    if int(cmd["issued_at_ns"]) > now + 5 * 10**9:
        return "issued_in_future: more than 5 s ahead of this camera's clock"
    if int(cmd["expires_at_ns"]) - int(cmd["issued_at_ns"]) > 600 * 10**9:
        return "validity_too_long: more than 600 s"
    return None


def on_connect(client, userdata, flags, reason, properties):
    client.publish(f"{p}/presence/{cam}", presence(True), qos=1, retain=True)
    client.subscribe([(f"{p}/cmd/all", 1), (f"{p}/cmd/cell/{geohash(lat, lon)}", 1),
                      (f"{p}/cmd/unit/{unit}", 1), (f"{p}/cmd/camera/{cam}", 1)])


def on_message(client, userdata, msg):
    global recording
    now, direct, signer, sig = time.time_ns(), msg.topic == f"{p}/cmd/camera/{cam}", None, None
    try:
        env = json.loads(msg.payload)
    except ValueError:
        return  # not_json: dropped
    if trust is not None and "signature" in env:  # a JWS: verify the bytes, then parse them
        opened = open_jws(env)
        if opened is None:
            return
        signer, sig, env = opened[0], env["signature"], json.loads(opened[1])
    if env.get("v") != 2 or env.get("type", "record_start") != "record_start" \
            or not all(isinstance(env.get(f), str) for f in ("issued_at_ns", "expires_at_ns")):
        return  # wrong_version, a record_cancel (not handled here), invalid_field: dropped
    cmd, expires, claim = env, int(env["expires_at_ns"]), (env["activation_id"], env["issuer"])
    why = refusal(signer, cmd, now) if trust is not None else None
    if why is None and sig in seen and not (claim in claims and recording):  # never acted on twice
        if not direct:
            return
        why = "replayed: this signed command was received before"
    if sig is not None and why is None:
        seen[sig] = expires
    o, t = cmd["origin"], cmd["targets"]
    near = o is not None and distance_m(o["lat"], o["lon"], lat, lon) <= cmd["radius_m"]
    concerned = unit in t.get("units", []) or cam in t.get("cameras", []) or near
    if why is None and not direct and (not concerned or claim in claims):
        return  # on a shared topic, not for us or answered already: stay silent
    status = ("rejected" if why else "already_recording" if claim in claims and recording
              else "rejected" if now > expires else "out_of_range" if not concerned
              else "already_recording" if recording else "started")
    why = why or (f"command expired {(now - expires) // 10**6} ms ago" if now > expires else "")
    recording = recording or status == "started"
    if status in ("started", "already_recording"):
        claims.add(claim)
    ack = {"type": "ack", "v": 2, "activation_id": cmd["activation_id"], "camera_id": cam,
           "unit_id": unit, "status": status, "reason": why, "attempt": cmd.get("attempt", 0),
           "received_at_ns": str(now)}
    if status == "started":
        ack |= {"recording_started_at_ns": str(now), "pre_event_kept_s": 0.0}
    data = json.dumps(ack).encode()
    if key is not None:  # a JWS of the ack's exact bytes (flattened JSON, EdDSA)
        head = b64(json.dumps({"alg": "EdDSA", "kid": kid, "typ": "trigger-mesh+json"}).encode())
        body = b64(data)
        signature = b64(key.sign(f"{head}.{body}".encode()))
        data = json.dumps({"protected": head, "payload": body, "signature": signature}).encode()
    client.publish(f"{p}/ack/{cmd['issuer']}/{cam}", data, qos=1)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{cam}")
client.will_set(f"{p}/presence/{cam}", presence(False), qos=1, retain=True)
client.on_connect, client.on_message = on_connect, on_message
client.connect(host, int(port))
client.loop_forever()
