"""Trigger sources: anything that turns raw signals into TriggerEvents for a gateway."""

from triggers.source import QueueSource, TriggerSource

__all__ = ["QueueSource", "TriggerSource"]
