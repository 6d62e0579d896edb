"""Crucible telemetry service."""
