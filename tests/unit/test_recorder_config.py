"""The camera config's ``recorder:`` section: defaults, what is refused as the file is
read, and what is refused at start (device, ffmpeg, storage folder), each naming its key."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mesh.camera.recording.build import ffmpeg_settings, recorder_problems
from mesh.cli.config_check import check_file
from mesh.config import CameraConfig, RecorderConfig, load_camera_config
from mesh.documents import ConfigError

REPO = Path(__file__).resolve().parents[2]


def camera(tmp_path: Path, recorder: str) -> Path:
    path = tmp_path / "camera.yaml"
    path.write_text(f"camera_id: c1\nunit: u1\nrecorder:\n{recorder}")
    return path


def test_without_a_recorder_section_the_camera_is_simulated() -> None:
    cfg = CameraConfig(camera_id="c1", unit="u1")
    assert cfg.recorder.backend == "simulated"
    assert recorder_problems(cfg.recorder) == []


@pytest.mark.parametrize(
    ("section", "key", "says"),
    [
        ("  backend: ffmpeg\n", "recorder", "backend ffmpeg needs a source"),
        ("  backend: ffmpeg\n  source: /dev/sda\n", "recorder.source", "/dev/videoN"),
        ("  backend: ffmpeg\n  source: lavfi:bogus\n", "recorder.source", "unknown test"),
        ("  backend: ffmpeg\n  source: 'rtsp://'\n", "recorder.source", "names no host"),
        ("  backend: ffmpeg\n  source: lavfi:testsrc2\n  codec: copy\n", "recorder", "raw"),
        ("  buffer_s: 121\n", "recorder.buffer_s", "120"),
        ("  resolution: 720p\n", "recorder.resolution", "WIDTHxHEIGHT"),
        ("  backend: vlc\n", "recorder.backend", "simulated"),
    ],
)
def test_a_bad_section_names_the_key(tmp_path: Path, section: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_camera_config(camera(tmp_path, section))
    keys = [k for k, _ in err.value.problems]
    assert key in keys, err.value.lines
    assert says in str(err.value)


def test_a_missing_device_or_folder_is_refused_at_start_and_by_config_check(
    tmp_path: Path,
) -> None:
    path = camera(
        tmp_path,
        f"  backend: ffmpeg\n  source: /dev/video97\n  storage:\n    dir: {tmp_path / 'nowhere'}\n",
    )
    kind, lines = check_file(path, None)
    assert kind == "camera"
    assert any("key 'recorder.source': /dev/video97: no such device" in line for line in lines)
    assert any("key 'recorder.storage.dir'" in line and "does not exist" in line for line in lines)


def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0 and not Path("/proc/sys").is_dir():
        pytest.skip("no read-only folder to try")
    # /proc/sys refuses new files even to root: a folder that exists and cannot be written.
    cfg = RecorderConfig(backend="ffmpeg", source="lavfi:testsrc2", storage={"dir": "/proc/sys"})
    problems = dict(recorder_problems(cfg))
    assert "is not writable" in problems["recorder.storage.dir"]


def test_ffmpeg_that_is_not_there_is_named(tmp_path: Path) -> None:
    cfg = RecorderConfig(
        backend="ffmpeg",
        source="lavfi:testsrc2",
        ffmpeg="/nonexistent/ffmpeg",
        storage={"dir": str(tmp_path)},
    )
    assert recorder_problems(cfg) == [
        ("recorder.ffmpeg", "/nonexistent/ffmpeg: not found (apt-get install -y ffmpeg)")
    ]


def test_the_shipped_ffmpeg_camera_encodes_its_test_source(tmp_path: Path) -> None:
    shutil.copy(REPO / "configs" / "camera-ffmpeg.yaml", tmp_path / "c.yaml")
    cfg = load_camera_config(tmp_path / "c.yaml")
    settings = ffmpeg_settings(cfg)
    assert settings.capture.encode
    assert settings.buffer_s == 30
    assert settings.record_s == cfg.record_s
    rtsp = RecorderConfig(backend="ffmpeg", source="rtsp://127.0.0.1/x")
    assert not rtsp.encode  # auto: an encoded source is copied
    assert RecorderConfig(backend="ffmpeg", source="rtsp://127.0.0.1/x", codec="h264").encode
