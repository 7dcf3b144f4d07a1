"""Audit tools over an activation log: replay, re-publishing, reports."""
