"""The gateway's view of the cameras on the air, fed by retained presence messages."""

from __future__ import annotations

from mesh.models import CameraPresence


class PresenceRegistry:
    def __init__(self) -> None:
        self._cameras: dict[str, CameraPresence] = {}

    def update(self, presence: CameraPresence) -> None:
        current = self._cameras.get(presence.camera_id)
        # A last-will carries the time its connection was made (the broker sends it
        # unchanged); the latest heartbeat we had is the truer "last seen".
        if current is not None and current.last_seen_ns > presence.last_seen_ns:
            presence = presence.model_copy(update={"last_seen_ns": current.last_seen_ns})
        self._cameras[presence.camera_id] = presence

    def remove(self, camera_id: str) -> None:
        self._cameras.pop(camera_id, None)

    def get(self, camera_id: str) -> CameraPresence | None:
        return self._cameras.get(camera_id)

    def snapshot(self) -> list[CameraPresence]:
        return list(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)
