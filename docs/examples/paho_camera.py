"""A camera written only from docs/protocol.md, with paho-mqtt and nothing of this repository.
usage: python paho_camera.py HOST PORT PREFIX CAMERA_ID UNIT_ID LAT LON"""
import json
import math
import sys
import time

import paho.mqtt.client as mqtt

host, port, p, cam, unit, lat, lon = sys.argv[1:8]
lat, lon, handled, recording = float(lat), float(lon), set(), False


def presence(online):
    now = time.time_ns()
    return json.dumps({"type": "presence", "v": 1, "camera_id": cam, "unit_id": unit,
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


def on_connect(client, userdata, flags, reason, properties):
    client.publish(f"{p}/presence/{cam}", presence(True), qos=1, retain=True)
    client.subscribe([(f"{p}/cmd/all", 1), (f"{p}/cmd/cell/{geohash(lat, lon)}", 1),
                      (f"{p}/cmd/unit/{unit}", 1), (f"{p}/cmd/camera/{cam}", 1)])


def on_message(client, userdata, msg):
    global recording
    cmd, now = json.loads(msg.payload), time.time_ns()
    o, t = cmd["origin"], cmd["targets"]
    near = o is not None and distance_m(o["lat"], o["lon"], lat, lon) <= cmd["radius_m"]
    concerned = unit in t["units"] or cam in t["cameras"] or near
    direct = msg.topic.endswith(f"/cmd/camera/{cam}")
    if not direct and (not concerned or cmd["activation_id"] in handled):
        return  # on a shared topic, not for us or answered already: stay silent
    status = ("already_recording" if cmd["activation_id"] in handled
              else "rejected" if now > cmd["expires_at_ns"] else "out_of_range" if not concerned
              else "already_recording" if recording else "started")
    recording = recording or status == "started"
    if status in ("started", "already_recording"):
        handled.add(cmd["activation_id"])
    ack = {"type": "ack", "v": 1, "activation_id": cmd["activation_id"], "camera_id": cam,
           "unit_id": unit, "status": status, "attempt": cmd["attempt"], "received_at_ns": now}
    client.publish(f"{p}/ack/{cmd['issuer']}/{cam}", json.dumps(ack), qos=1)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{cam}")
client.will_set(f"{p}/presence/{cam}", presence(False), qos=1, retain=True)
client.on_connect, client.on_message = on_connect, on_message
client.connect(host, int(port))
client.loop_forever()
