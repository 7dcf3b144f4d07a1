"""``trigger-mesh demo --real-video``, run as a user runs it: two cameras record FFmpeg's
test pattern into files, each recording is closed by an officer's stop with a signed
manifest, the gateway's log holds each manifest's hash, and the files are real video
holding the pre-event seconds the summary reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.test_cli import run


def probe_seconds(ffprobe: str, segment: Path) -> tuple[str, int, int, float]:
    done = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height:format=duration", "-of", "json", str(segment)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    facts = json.loads(done.stdout)
    stream = facts["streams"][0]
    return (
        stream["codec_name"],
        stream["width"],
        stream["height"],
        float(facts["format"]["duration"]),
    )


def test_demo_real_video_records_signs_and_verifies(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    log = tmp_path / "demo.db"
    result = run(
        "demo", "--json", "--real-video", "--video-dir", str(tmp_path / "video"),
        "--log", str(log), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True, summary["problems"]
    video = summary["real_video"]
    recordings = video["recordings"]
    assert sorted(r["camera_id"] for r in recordings) == ["bwc-12a", "bwc-12b"]
    # Where the files are is printed for the user.
    assert video["directory"] in result.stderr + result.stdout
    exported = run("log", "export", str(log), "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    logged = [json.loads(line) for line in exported.stdout.splitlines()]
    stops = {
        row["body"]["recording"]["manifest_sha256"]
        for row in logged
        if row.get("kind") == "recording" and row["body"]["recording"]["event"] == "stop"
    }
    for recording in recordings:
        assert recording["verdict"] == "intact", recording
        assert recording["stop_reason"] == "officer"
        # The demo waits for 3 s of buffer before the first trigger: at least that much
        # (less one segment) was kept from before the command.
        assert recording["pre_event_kept_s"] >= 2.0, recording
        assert recording["manifest_sha256"] in stops  # the log commits to this footage
        folder = Path(recording["directory"])
        segments = sorted(folder.glob("*.ts"))
        assert len(segments) == recording["segments"] >= 3
        total = 0.0
        for segment in segments:
            codec, width, height, seconds = probe_seconds(ffmpeg[1], segment)
            assert (codec, width, height) == ("h264", 640, 360)
            total += seconds
        assert abs(total - recording["seconds"]) < 1.5, (total, recording["seconds"])
        # An auditor's own check of one recording against the run's trust store.
        verified = run("recording", "verify", str(folder), "--trust", video["trust"])
        assert verified.returncode == 0, verified.stdout + verified.stderr
