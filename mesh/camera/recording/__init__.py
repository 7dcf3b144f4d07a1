"""Camera recorders: one interface (``base``), a simulation and an FFmpeg back end."""
