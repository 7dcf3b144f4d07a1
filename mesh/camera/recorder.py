"""The simulated recorder, where it used to live: see ``mesh.camera.recording``.

Kept so that ``from mesh.camera.recorder import SimulatedRecorder`` goes on working.
"""

from __future__ import annotations

from mesh.camera.recording.base import RecordingStart
from mesh.camera.recording.simulated import SimulatedRecorder

__all__ = ["RecordingStart", "SimulatedRecorder"]
