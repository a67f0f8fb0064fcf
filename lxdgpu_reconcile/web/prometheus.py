"""Prometheus text exposition of the board's last observation (``/metrics``). Pure."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lxdgpu_reconcile.web.board import Observation

PREFIX = "lxdgpu_web"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(observation: Observation, *, failures: int = 0) -> str:
    """Hosts up, containers by host and state, the last observation's duration and time, and
    read errors by host since the start."""
    data: dict[str, Any] = observation.data
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}_{name} {kind}")
        for labels, value in samples:
            lines.append(f"{PREFIX}_{name}{labels} {value:g}")

    hosts = data.get("hosts", [])
    metric(
        "host_up",
        "gauge",
        "1 when the host was read in the last observation, else 0.",
        [(f'{{host="{_label(h["name"])}"}}', 1.0 if h["reachable"] else 0.0) for h in hosts],
    )
    metric(
        "host_stale",
        "gauge",
        "1 when the page shows an older reading of the host, else 0.",
        [(f'{{host="{_label(h["name"])}"}}', 1.0 if h["stale"] else 0.0) for h in hosts],
    )
    states = Counter((c["host"], c["state"]) for c in data.get("containers", []))
    metric(
        "containers",
        "gauge",
        "Containers by host and state, as last read.",
        [
            (f'{{host="{_label(host)}",state="{_label(state)}"}}', float(count))
            for (host, state), count in sorted(states.items())
        ],
    )
    metric(
        "observation_duration_seconds",
        "gauge",
        "How long the last observation of every host took.",
        [("", observation.duration)],
    )
    finished = observation.finished_at.timestamp() if observation.finished_at else 0.0
    metric(
        "observation_timestamp_seconds",
        "gauge",
        "When the last observation finished (Unix time; 0 before the first).",
        [("", finished)],
    )
    metric(
        "observations_total",
        "counter",
        "Observations since the start.",
        [("", float(observation.rounds))],
    )
    metric(
        "observation_errors_total",
        "counter",
        "Host reads that failed since the start, by host.",
        [
            (f'{{host="{_label(h["name"])}"}}', float(observation.errors.get(h["name"], 0)))
            for h in hosts
        ],
    )
    metric(
        "observation_failures_total",
        "counter",
        "Observation rounds that failed as a whole (the page kept the previous data).",
        [("", float(failures))],
    )
    return "\n".join(lines) + "\n"
