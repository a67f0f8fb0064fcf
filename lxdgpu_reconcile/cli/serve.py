"""``serve``: the read-only fleet web page, refreshed from LXD in the background.

I/O: reads the fleet file (through ``service``), observes every host every ``--interval``
seconds in a background thread (read only) and plans against each observation (reading the
template files and ``/proc``), and serves HTTP with uvicorn until interrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, LabOpt, err_console, load
from lxdgpu_reconcile.web.listen import DEFAULT_LISTEN, check_free, is_loopback, parse_listen

if TYPE_CHECKING:
    from lxdgpu_reconcile.state import FleetSnapshot


@app.command()
def serve(
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    listen: Annotated[
        str,
        typer.Option(
            help="HOST:PORT to listen on. Anything but loopback makes the page reachable from "
            "the network: put it behind a reverse proxy with TLS and a login (docs/web.md).",
        ),
    ] = DEFAULT_LISTEN,
    interval: Annotated[
        float, typer.Option(help="Seconds between two observations of the hosts.", min=1.0)
    ] = 30.0,
    timeout: Annotated[
        float, typer.Option(help="Seconds each host gets to answer.", min=0.1)
    ] = 30.0,
    title: Annotated[str, typer.Option(help="The page's title.")] = "GPU servers",
) -> None:
    """Serve a read-only web page of every host and container of the fleet. Changes nothing.

    The hosts are observed in the background every --interval seconds; page views, /api/v1/status,
    /metrics and /healthz answer from the last observation and never reach LXD.

    Example: [bold]lxdgpu-reconcile serve -f fleet.yaml[/bold]  (http://127.0.0.1:8080/)
    """
    # The web stack is imported by this command only, so that the others start fast.
    import uvicorn

    from lxdgpu_reconcile.observe.reading import observe_fleet
    from lxdgpu_reconcile.web.board import Board, Observation, Observer
    from lxdgpu_reconcile.web.pending import Planner
    from lxdgpu_reconcile.web.server import create_app
    from lxdgpu_reconcile.web.view import page_data

    host, port = parse_listen(listen)
    loaded = load(fleet, lab)
    spec = loaded.fleet
    check_free(host, port)

    def observe() -> FleetSnapshot:
        # What `status` reads: with the addresses of running containers.
        return observe_fleet(spec, timeout=timeout, addresses=True)

    def build(observation: Observation) -> dict[str, object]:
        return page_data(spec, observation, interval=interval)

    # Each observation is also planned against (default options), to show pending changes.
    board = Board(build, plan=Planner(spec, loaded.site, lambda: loaded.template_files))
    observer = Observer(board, observe, interval=interval)
    web = create_app(board, title=title, observer=observer, stale_after=3 * interval + timeout)
    shown = f"[{host}]" if ":" in host else host
    err_console.print(f"serving http://{shown}:{port}/ (Ctrl-C stops)", markup=False)
    if not is_loopback(host):
        err_console.print(
            f"{host} is reachable from the network: serve the page through a reverse proxy "
            "with TLS and a login (docs/web.md)",
            markup=False,
            soft_wrap=True,
        )
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)
