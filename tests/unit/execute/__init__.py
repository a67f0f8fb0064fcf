"""Executor tests over in-memory LXD hosts."""
