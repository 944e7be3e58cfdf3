"""Shared test helpers: real local peers (CloudEvents sink)."""
