"""Trigger sources: anything that turns raw signals into TriggerEvents for a gateway."""

from triggers.manual import manual_trigger
from triggers.source import QueueSource, TriggerSource

__all__ = ["QueueSource", "TriggerSource", "manual_trigger"]
