"""The soak's parameters and its report: per-window table, cross-checks, the JSON line."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soak_collect import Collector, Sample

from mesh.decide.stats import percentile

GATEWAY_COUNTERS = ("activations.", "acks.", "retries", "publish.link_down", "escalations.")
SAMPLE_S = 2.0  # RSS and CPU sampling period


@dataclass(frozen=True)
class Options:
    minutes: float
    rate: float
    cameras: int
    gateways: int
    scene_cameras: int
    warmup_s: float
    floor_s: float
    drain_s: float
    ack_check: bool
    stagger_s: float
    fleet_processes: int


def windows_for(measured_s: float) -> float:
    """Window length: a minute, or half the measured time when that is under 2 minutes."""
    return 60.0 if measured_s >= 120 else measured_s / 2


def _q(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 2) if values else None


def _pct(first: float | None, last: float | None) -> float | None:
    if not first or last is None:
        return None
    return round((last - first) / first * 100, 2)


def report(
    opts: Options,
    c: Collector,
    samples: list[Sample],
    floor: list[float],
    *,
    t0: float,
    send_end: float,
    cameras: Counter[str],
    camera_gc: dict[str, Any],
    warnings: dict[str, int],
    dead: list[str],
    publish_failures: list[str],
    logdir: Path,
) -> dict[str, Any]:
    measured_s = opts.minutes * 60
    window_s = windows_for(measured_s)
    start = t0 + opts.warmup_s
    count = max(1, math.ceil(measured_s / window_s - 1e-9))
    outcomes = {e: c.outcome(e) for e in c.sent}
    write_triggers(logdir / "triggers.csv", c, outcomes, t0)
    lost = {e: o for e, o in outcomes.items() if o not in ("ok", "merged")}
    rows: list[dict[str, Any]] = []
    for w in range(count):
        lo, hi = start + w * window_s, start + (w + 1) * window_s
        events = [e for e, s in c.sent.items() if lo <= s.at < hi]
        latencies = [(c.finals[e].at - c.sent[e].at) * 1000 for e in events if outcomes[e] == "ok"]
        acked = [
            a for e in events if outcomes[e] == "ok" and (a := c.finals[e].all_acked_ms) is not None
        ]
        in_window = [s for s in samples if lo <= s.at < hi]
        rss = {
            g: round(sum(s.rss_mb[g] for s in in_window) / len(in_window), 1) if in_window else None
            for g in ("gateways", "cameras", "mosquitto")
        }
        cpu: dict[str, float] = {}
        if len(in_window) >= 2:
            span = in_window[-1].at - in_window[0].at
            if span > 0:
                for g in ("gateways", "cameras", "mosquitto", "soak"):
                    used = in_window[-1].cpu_s[g] - in_window[0].cpu_s[g]
                    cpu[g] = round(used / span * 100, 1)
                # Everyone else on the machine: what distorts the figures.
                busy = (in_window[-1].busy_s - in_window[0].busy_s) / span * 100
                cpu["others"] = round(max(0.0, busy - sum(cpu.values())), 1)
        rows.append(
            {
                "window": w + 1,
                "triggers": len(events),
                "activations": len(latencies),
                "lost": sum(1 for e in events if e in lost),
                "p50_ms": _q(latencies, 50),
                "p99_ms": _q(latencies, 99),
                "max_ms": round(max(latencies), 2) if latencies else None,
                "all_acked_p99_ms": _q(acked, 99),
                "rss_mb": rss,
                "cpu_pct": cpu,
            }
        )
    measured = [
        (c.finals[e].at - s.at) * 1000
        for e, s in c.sent.items()
        if s.at >= start and outcomes[e] == "ok"
    ]
    first, last = rows[0], rows[-1]
    growth = {
        g: _pct(first["rss_mb"][g], last["rss_mb"][g]) for g in ("gateways", "cameras", "mosquitto")
    }
    each_first = [s for s in samples if start <= s.at < start + window_s]
    each_last = [s for s in samples if start + (count - 1) * window_s <= s.at]
    per_gateway = {}
    if each_first and each_last:
        for name in each_first[0].rss_each_mb:
            if name.startswith("gateway-"):
                a = sum(s.rss_each_mb.get(name, 0.0) for s in each_first) / len(each_first)
                b = sum(s.rss_each_mb.get(name, 0.0) for s in each_last) / len(each_last)
                per_gateway[name] = [round(a, 1), round(b, 1)]
    counters: Counter[str] = Counter()
    for status in c.status.values():
        counters.update(
            {k: v for k, v in status.counters.items() if k.startswith(GATEWAY_COUNTERS)}
        )
    expected = [f.expected for f in c.finals.values()]
    # Every start a record reports is an ack some camera sent: the cameras' own counts
    # (commands acted on: started, or answered already recording) cannot be fewer.
    records_started = sum(f.started for f in c.finals.values())
    cameras_acked = cameras["decision.start"] + cameras["decision.ack"]
    actual_rate = len(c.sent) / (send_end - t0) if send_end > t0 else 0.0
    return {
        "bench": "soak",
        "lost": len(lost),
        "p99_first_minute_ms": first["p99_ms"],
        "p99_last_minute_ms": last["p99_ms"],
        "rss_growth_pct": growth["gateways"],
        "minutes": opts.minutes,
        "window_s": window_s,
        "warmup_s": opts.warmup_s,
        "rate": opts.rate,
        "rate_achieved": round(actual_rate, 2),
        "cameras": opts.cameras,
        "gateways": opts.gateways,
        "scene_cameras": opts.scene_cameras,
        "triggers": len(c.sent),
        "confirmed": sum(1 for o in outcomes.values() if o == "ok"),
        "merged": sum(1 for o in outcomes.values() if o == "merged"),
        "lost_reasons": dict(Counter(_reason(o) for o in lost.values())),
        "lost_examples": dict(list(lost.items())[:5]),
        "expected_per_activation": {
            "mean": round(sum(expected) / len(expected), 2) if expected else None,
            "min": min(expected, default=None),
            "max": max(expected, default=None),
        },
        "p50_ms": _q(measured, 50),
        "p99_ms": _q(measured, 99),
        "floor_p50_ms": _q(floor, 50),
        "floor_p99_ms": _q(floor, 99),
        "floor_rounds": len(floor),
        "ratio_p99": round(_q(measured, 99) / _q(floor, 99), 2)  # type: ignore[operator]
        if measured and floor
        else None,
        "rss_growth_pct_by_group": growth,
        # Where the CPU went, user vs kernel (socket sends on loopback are kernel time).
        "cpu_user_sys_s": (
            {g: [round(u, 1), round(k, 1)] for g, (u, k) in samples[-1].user_sys_s.items()}
            if samples
            else {}
        ),
        "rss_mb_first_last_by_gateway": per_gateway,
        "records_started_cameras": records_started,
        "cameras_acks_sent": cameras_acked,
        "cameras_agree": cameras_acked >= records_started,
        "camera_counters": dict(sorted(cameras.items())),
        "camera_gc": camera_gc,
        "acks_heard": c.acks_seen if opts.ack_check else None,
        "ack_mismatches": len(c.ack_mismatches),
        "ack_mismatch_examples": c.ack_mismatches[:3],
        "gateway_counters": dict(sorted(counters.items())),
        "gateway_stderr_lines": warnings,
        "dead_processes": dead,
        "publish_failures": len(publish_failures),
        "rejected_payloads": dict(c.rejected_payloads),
        # Summed RSS (MB) every ~10 s from the start of the load: a leak climbs steadily,
        # a cache or a queue levels off.
        "rss_series_mb": [
            [
                round(x.at - t0),
                *(round(x.rss_mb[g], 1) for g in ("gateways", "cameras", "mosquitto")),
            ]
            for x in samples[:: max(1, round(10 / SAMPLE_S))]
        ],
        "logs": str(logdir),
        "windows": rows,
    }


def write_triggers(path: Path, c: Collector, outcomes: dict[str, str], t0: float) -> None:
    """One line per trigger (kept with --keep): when it was sent, its outcome, latency."""
    with path.open("w") as out:
        out.write("n,gateway,kind,sent_s,outcome,latency_ms,all_acked_ms,expected,started\n")
        for e, s in c.sent.items():
            f = c.finals.get(e)
            latency = f"{(f.at - s.at) * 1000:.2f}" if f else ""
            acked = "" if f is None or f.all_acked_ms is None else f"{f.all_acked_ms:.2f}"
            counts = f"{f.expected},{f.started}" if f else ","
            out.write(
                f"{s.n},{s.gateway},{s.kind},{s.at - t0:.3f},{outcomes[e]!r},{latency},{acked},"
                f"{counts}\n"
            )


def _reason(outcome: str) -> str:
    return outcome.split(":", maxsplit=1)[0].split(" ", maxsplit=1)[0]


def print_table(r: dict[str, Any]) -> None:
    unit = "min" if r["window_s"] == 60 else f"{r['window_s']:g}s"
    print(
        f"soak: {r['triggers']} triggers at {r['rate_achieved']} /s to {r['gateways']} gateways, "
        f"{r['cameras']} cameras ({r['expected_per_activation']['mean']} expected per "
        f"activation); warm-up {r['warmup_s']:g} s, windows of {unit}"
    )
    print(
        f"{'win':>4} {'trig':>6} {'acts':>6} {'lost':>5} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'gw p99':>8} {'gw RSS':>8} {'cam RSS':>8} {'mq RSS':>7} "
        f"{'gw cpu':>7} {'cam cpu':>7} {'mq cpu':>7} {'soak':>7} {'others':>7}"
    )

    def f(v: float | None, width: int) -> str:
        return f"{v:>{width}.1f}" if v is not None else f"{'-':>{width}}"

    for w in r["windows"]:
        rss, cpu = w["rss_mb"], w["cpu_pct"]
        print(
            f"{w['window']:>4} {w['triggers']:>6} {w['activations']:>6} {w['lost']:>5} "
            f"{f(w['p50_ms'], 8)} {f(w['p99_ms'], 8)} {f(w['max_ms'], 8)} "
            f"{f(w['all_acked_p99_ms'], 8)} {f(rss['gateways'], 8)} {f(rss['cameras'], 8)} "
            f"{f(rss['mosquitto'], 7)} {f(cpu.get('gateways'), 6)}% "
            f"{f(cpu.get('cameras'), 6)}% {f(cpu.get('mosquitto'), 6)}% "
            f"{f(cpu.get('soak'), 6)}% {f(cpu.get('others'), 6)}%"
        )
    print("(latency: trigger published -> final record heard; gw p99: the record's all_acked_ms;"
          " RSS in MB summed over the group, mean of the window; cpu: % of one core; soak: this"
          " process; others: the rest of the machine)")  # fmt: skip
    print(
        f"lost {r['lost']} of {r['triggers']} {r['lost_reasons'] or ''}; merged {r['merged']}; "
        f"cameras acked {r['cameras_acks_sent']} >= records' started cameras "
        f"{r['records_started_cameras']}: {r['cameras_agree']}; "
        f"ack cross-check mismatches {r['ack_mismatches'] if r['acks_heard'] is not None else '-'};"
        " "
        f"gateway counters {r['gateway_counters']}"
    )
    print(
        f"latency p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; floor (bare QoS 1 round trip, "
        f"same rate and fan-in, {r['floor_rounds']} rounds) p50 {r['floor_p50_ms']} ms, "
        f"p99 {r['floor_p99_ms']} ms; ratio p99 {r['ratio_p99']}"
    )
    print(
        f"RSS growth, last window vs first: gateways {r['rss_growth_pct']} % "
        f"(each, MB first/last: {r['rss_mb_first_last_by_gateway']}), "
        f"cameras {r['rss_growth_pct_by_group']['cameras']} %, "
        f"mosquitto {r['rss_growth_pct_by_group']['mosquitto']} %"
    )
    if r["dead_processes"]:
        print(f"DEAD: {r['dead_processes']}")
