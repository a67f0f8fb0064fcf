"""The service layer every command calls: load, plan, apply, saved plans. Does I/O.

Reads the fleet file, its template files and saved plans, observes the hosts and applies plans
(through ``observe`` and ``execute``). Never prints and never exits: every problem the admin can
act on is raised as a ``ToolError`` subclass, which the command line turns into output and an
exit status in one place (``cli.app``).

The sequence is ``read_fleet`` (the fleet file, with its warnings as data), ``locate`` (where its
hosts are: the real ones or the lab, and whether each can be connected to as configured), then
``plan`` (observe and plan) and ``apply``. ``load`` does the first two in one call; those three
live in ``workspace`` and are re-exported here, so every command calls this one module.
"""

from __future__ import annotations

import datetime
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import (
    bootstrap,
    builders,
    commands,
    executor,
    images,
    lxdops,
    moves,
    passwords,
)
from lxdgpu_reconcile.execute.build_outcome import BuildOutcome, check_buildable, outcome_of
from lxdgpu_reconcile.execute.results import ApplyReport, Event
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import snapshot_file
from lxdgpu_reconcile.observe.hostshell import OpenShell
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.observe.reading import observe_fleet
from lxdgpu_reconcile.observe.transport import open_shell
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner, saving, sensitive, template_steps
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.state import FleetSnapshot
from lxdgpu_reconcile.templates import recipe
from lxdgpu_reconcile.workspace import NAME_THE_FLEET as NAME_THE_FLEET
from lxdgpu_reconcile.workspace import FleetProblems as FleetProblems
from lxdgpu_reconcile.workspace import FleetRead as FleetRead
from lxdgpu_reconcile.workspace import Loaded as Loaded
from lxdgpu_reconcile.workspace import UnusableHosts as UnusableHosts
from lxdgpu_reconcile.workspace import UnusableLab as UnusableLab
from lxdgpu_reconcile.workspace import fix_fleet_hint as fix_fleet_hint
from lxdgpu_reconcile.workspace import fleet_digest as fleet_digest
from lxdgpu_reconcile.workspace import lab_env as lab_env
from lxdgpu_reconcile.workspace import load as load
from lxdgpu_reconcile.workspace import locate as locate
from lxdgpu_reconcile.workspace import locate_offline as locate_offline
from lxdgpu_reconcile.workspace import read_fleet as read_fleet
from lxdgpu_reconcile.workspace import unreadable_lab as unreadable_lab

#: Seconds each host gets to answer an observation.
OBSERVE_TIMEOUT = 30.0


class StalePlan(ToolError):
    """A saved plan that no longer applies: ``stale`` holds every reason, nothing was written."""

    def __init__(self, stale: tuple[saving.Stale, ...], *, plan_file: str, replan: str) -> None:
        super().__init__(
            f"{plan_file} is stale: nothing was applied.",
            f"run plan again ({replan}), review it, then apply the new plan",
        )
        self.stale = stale
        self.plan_file = plan_file
        self.replan = replan


class PlanMismatch(StalePlan):
    """A saved plan that is not the plan its fleet file, options and the hosts give now (edited,
    or made otherwise): ``stale`` names every difference; nothing was written."""

    def __init__(self, stale: tuple[saving.Stale, ...], *, plan_file: str, replan: str) -> None:
        super().__init__(stale, plan_file=plan_file, replan=replan)
        self.message = (
            f"{plan_file} is not the plan that its fleet file and the hosts give now: nothing "
            "was applied."
        )


# --- plan and apply -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: the options of ``plan``, ``apply``, ``reconcile`` and ``build``.

    ``adopt``: True (every untagged object in the fleet's way), False, or names to adopt.
    ``only_template``/``force_build``/``distribute``: plan one template's build and copies only
    (``build``).
    """

    targets: tuple[str, ...] = ()
    prune: bool = False
    adopt: bool | tuple[str, ...] = False
    allow_restart: bool = False
    #: Let profile writes reach containers the tool does not manage (``--touch-unmanaged``).
    touch_unmanaged: bool = False
    only_template: str | None = None
    force_build: bool = False
    distribute: bool = True
    #: Containers ``apply --force NAME`` names: stopped even while their GPUs are busy.
    force: tuple[str, ...] = ()


@dataclass(frozen=True)
class Planned:
    """A plan and the observation it was made from."""

    plan: plans.Plan
    snapshot: FleetSnapshot


def plan(
    loaded: Loaded,
    request: PlanRequest,
    *,
    timeout: float,
    snapshot: snapshot_file.Saved | None = None,
) -> Planned:
    """Read the template files, observe every host (``timeout`` seconds each), and plan.

    The planner is told which builder processes named by the snapshot's build containers are
    alive on this machine (``builders.live_builders``, reads ``/proc``), so that it does not take
    a build in progress for a leftover.

    ``snapshot`` (``plan --state``): plan against this saved observation instead, with the
    builders and the time it recorded; no host is contacted."""
    _ = loaded.template_files  # read first: a missing file fails before a host is contacted
    hosts = None
    if request.only_template in loaded.fleet.templates:
        scope = template_steps.BuildScope(request.only_template, distribute=request.distribute)
        hosts = template_steps.build_hosts(loaded.fleet, scope)
    if snapshot is not None:
        observed = snapshot.snapshot
        live = recipe.LiveBuilders(
            hostname=snapshot.hostname, live=snapshot.live, now=snapshot.taken_at
        )
    else:
        observed = observe_fleet(
            loaded.fleet,
            timeout=timeout,
            hosts=hosts,
            # A template's build plans no host layer: its hosts' own systems are not read.
            open_shell=None if hosts is not None else host_shells(loaded),
            site=loaded.site,
        )
        live = builders.live_builders(observed)
        made = _make_plan(loaded, request, observed, live)
        # What would stop a container whose GPUs are busy is pending (``moves.hold_busy``).
        opener = functools.partial(_open_host, loaded.fleet, timeout)
        made = moves.hold_busy(made, observed, opener, force=request.force)
        return Planned(plan=made, snapshot=observed)
    return Planned(plan=_make_plan(loaded, request, observed, live), snapshot=observed)


def host_shells(loaded: Loaded) -> OpenShell:
    """How each host's own system (accounts, homes, delegations) is reached: ssh to
    ``hosts.NAME.ssh``, this machine with ``--local``, or not at all (``observe.transport``)."""
    return open_shell(loaded.fleet, loaded.site)


def _open_host(fleet: Fleet, timeout: float, host: str) -> LxdApi:
    return connecting.connect(host, fleet.hosts[host], timeout=timeout)


def _make_plan(
    loaded: Loaded, request: PlanRequest, snapshot: FleetSnapshot, live: recipe.LiveBuilders
) -> plans.Plan:
    contents = loaded.template_files
    made: plans.Plan = planner.make_plan(
        loaded.fleet,
        snapshot,
        loaded.site,
        targets=request.targets,
        prune=request.prune,
        adopt=request.adopt,
        allow_restart=request.allow_restart,
        touch_unmanaged=request.touch_unmanaged,
        template_files=contents,
        only_template=request.only_template,
        force_build=request.force_build,
        distribute=request.distribute,
        builders=live,
    )
    return made


def snapshot_text(snapshot: FleetSnapshot) -> str:
    """``snapshot``, just observed, as the text of a snapshot file (``status --snapshot-out``):
    with this machine's live template builders and the time, as ``plan`` would use them."""
    live = builders.live_builders(snapshot)
    return snapshot_file.dumps(
        snapshot,
        taken_at=live.now,
        tool_version=__version__,
        hostname=live.hostname,
        live=live.live,
    )


def apply(
    loaded: Loaded,
    p: plans.Plan,
    *,
    timeout: float,
    progress: executor.Progress | None = None,
    step_timeout: float = images.DEFAULT_STEP_TIMEOUT,
    request: PlanRequest | None = None,
    parallel: int = executor.DEFAULT_PARALLEL,
    credentials: Path | None = None,
) -> ApplyReport:
    """Perform ``p`` on the hosts of ``loaded``; ``timeout`` bounds each LXD operation,
    ``step_timeout`` each step of a template build; ``parallel``: actions at once per host.

    ``request`` holds the options this run was given: its ``adopt`` and ``prune`` are all the
    executor may adopt or delete (``executor.Authority``), whatever ``p`` says. None: neither.
    ``credentials``: ``--credentials-dir``, where first passwords go (``passwords.store_for``).
    """
    store = passwords.store_for(p, loaded.path, credentials, loaded.site.lab_dir)
    return executor.apply_plan(
        p,
        loaded.fleet,
        timeout=timeout,
        progress=progress,
        template_files=loaded.template_files,
        step_timeout=step_timeout,
        authority=authority(request or PlanRequest(), loaded.site),
        parallel=parallel,
        open_shell=host_shells(loaded),
        credentials=store,
    )


def authority(request: PlanRequest, site: Site) -> executor.Authority:
    """What the executor may do for a run given ``request`` on ``site``."""
    root, own = site.host_root, site.own_homes
    return executor.Authority(
        adopt=request.adopt, prune=request.prune, host_root=root, own_homes=own, force=request.force
    )


# --- one template -----------------------------------------------------------------------------


def build_template(
    loaded: Loaded,
    name: str,
    *,
    force: bool = False,
    distribute: bool = True,
    timeout: float = lxdops.DEFAULT_TIMEOUT,
    step_timeout: float = images.DEFAULT_STEP_TIMEOUT,
    progress: Callable[[images.BuildEvent], None] | None = None,
) -> BuildOutcome:
    """``build TEMPLATE``: plan template ``name`` alone (``force``: even when current;
    ``distribute``: with its copies) and perform that plan (``perform_build``)."""
    request = PlanRequest(only_template=name, force_build=force, distribute=distribute)
    planned = plan(loaded, request, timeout=min(timeout, OBSERVE_TIMEOUT))
    return perform_build(
        loaded, planned, name, timeout=timeout, step_timeout=step_timeout, progress=progress
    )


def perform_build(
    loaded: Loaded,
    planned: Planned,
    name: str,
    *,
    timeout: float,
    step_timeout: float = images.DEFAULT_STEP_TIMEOUT,
    progress: Callable[[images.BuildEvent], None] | None = None,
    events: executor.Progress | None = None,
) -> BuildOutcome:
    """Apply the ``build TEMPLATE`` plan ``planned``, read its hosts again and tell what it did.

    ``progress`` gets the build's stages, steps and output lines; ``events`` every event of the
    apply. Raises ``BuildError`` when the plan has no build host to work on or its build failed.
    """
    tail: deque[str] = deque(maxlen=commands.TAIL_LINES)

    def watch(event: Event) -> None:
        if isinstance(event.build, images.StepStarted):
            tail.clear()
        elif isinstance(event.build, images.StepOutput):
            tail.append(event.build.line)
        if event.build is not None and progress is not None:
            progress(event.build)
        if events is not None:
            events(event)

    check_buildable(planned.plan, name)
    report = apply(loaded, planned.plan, timeout=timeout, progress=watch, step_timeout=step_timeout)
    hosts = [host.host for host in planned.plan.hosts]
    after = observe_fleet(loaded.fleet, timeout=min(timeout, OBSERVE_TIMEOUT), hosts=hosts)
    return outcome_of(
        planned.plan,
        report,
        name,
        alias=loaded.fleet.templates[name].alias,
        before=planned.snapshot,
        after=after,
        tail=tuple(tail),
    )


# --- saved plans ----------------------------------------------------------------------------------


def saved_plan(planned: Planned, *, fleet_path: Path, digest: str, lab: Path | None) -> str:
    """``planned`` (made from the fleet file with SHA-256 ``digest``) as the text of a plan file.

    Raises ``ToolError`` when the fleet file changed while the plan was being made.
    """
    if fleet_digest(fleet_path) != digest:
        raise ToolError(
            f"{fleet_path} changed while the plan was being made; the plan was not saved",
            "run plan again",
        )
    saved = saving.save(
        planned.plan,
        planned.snapshot,
        fleet=saving.FleetFile(path=str(fleet_path), sha256=digest),
        lab=str(lab.resolve()) if lab is not None else None,
        tool_version=__version__,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    return saving.render(saved)


@dataclass(frozen=True)
class OpenedPlan:
    """A saved plan that passed the checks needing no host: where it applies, and to what."""

    saved: saving.SavedPlan
    plan_file: Path
    fleet_path: Path
    lab: Path | None
    digest: str

    @property
    def replan(self) -> str:
        """The command that makes a fresh plan in its place."""
        return f"lxdgpu-reconcile plan -f {self.fleet_path} --out {self.plan_file}"


def open_saved(plan_file: Path, *, fleet: Path | None, lab: Path | None) -> OpenedPlan:
    """The saved plan in ``plan_file``, checked against everything but the hosts: the lab it was
    made for, the fleet file's bytes and the tool version.

    ``fleet`` overrides the fleet file the plan names. Raises ``SavedPlanError``, ``ToolError``
    or ``StalePlan``.
    """
    try:
        text = plan_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise saving.SavedPlanError(
            f"cannot read {plan_file}: {exc.strerror or exc}", "check the path of the plan"
        ) from None
    except UnicodeDecodeError:
        raise saving.SavedPlanError(
            f"{plan_file} is not a saved plan (not UTF-8 text)",
            "check the path of the plan, or save a new one with `lxdgpu-reconcile plan --out`",
        ) from None
    saved = saving.parse(text, name=str(plan_file))
    saved_lab = Path(saved.lab) if saved.lab else None
    if lab is not None and (saved_lab is None or lab.resolve() != saved_lab):
        made_for = f"the lab in {saved.lab}" if saved.lab else "the real hosts"
        raise saving.SavedPlanError(
            f"{plan_file} was made for {made_for}, and --lab (or LXDGPU_LAB) points at {lab}",
            "apply it where it was made (unset LXDGPU_LAB, or give the same --lab), or plan again "
            "for the other one",
        )
    fleet_path = fleet or Path(saved.fleet.path)
    opened = OpenedPlan(
        saved=saved,
        plan_file=plan_file,
        fleet_path=fleet_path,
        lab=saved_lab,
        digest=fleet_digest(fleet_path),
    )
    early = saving.check(
        saved.model_copy(update={"preconditions": ()}),
        FleetSnapshot(),
        fleet_sha256=opened.digest,
        tool_version=__version__,
    )
    if early:
        raise StalePlan(early, plan_file=str(plan_file), replan=opened.replan)
    return opened


def saved_request(saved: saving.SavedPlan) -> PlanRequest:
    """The options ``saved`` was made with, as a request to plan (and apply) with again."""
    options = saved.plan.options
    return PlanRequest(
        targets=options.targets,
        prune=options.prune,
        adopt=options.adopt,
        allow_restart=options.allow_restart,
        touch_unmanaged=options.touch_unmanaged,
    )


def check_saved(opened: OpenedPlan, loaded: Loaded, *, timeout: float) -> Planned:
    """Observe every host (``timeout`` seconds each), check every precondition of ``opened``,
    then plan again with its options and compare: returns the plan made now, to apply in place
    of the file's, when it equals the saved plan (masked as the file is).

    Raises ``StalePlan`` with every reason it no longer applies, ``PlanMismatch`` naming every
    difference from the plan made now, and ``SavedPlanError`` when the plan names a host the
    fleet file does not declare."""
    named = {*opened.saved.hosts_to_check, *(host.host for host in opened.saved.plan.hosts)}
    unknown = sorted(named - set(loaded.fleet.hosts))
    if unknown:
        raise saving.SavedPlanError(
            f"{opened.plan_file} names host(s) {', '.join(unknown)}, which {opened.fleet_path} "
            "does not declare; nothing was applied",
            f"run plan again ({opened.replan}), review it, then apply the new plan",
        )
    planned = plan(loaded, saved_request(opened.saved), timeout=timeout)
    stale = saving.check(
        opened.saved, planned.snapshot, fleet_sha256=opened.digest, tool_version=__version__
    )
    if stale:
        raise StalePlan(stale, plan_file=str(opened.plan_file), replan=opened.replan)
    differences = saving.compare(opened.saved.plan, sensitive.mask_plan(planned.plan))
    if differences:
        raise PlanMismatch(differences, plan_file=str(opened.plan_file), replan=opened.replan)
    return planned


# --- host bootstrap -------------------------------------------------------------------------------


def survey_bootstrap(
    read: FleetRead, name: str, site: Site, *, listen: str | None, replace_cert: bool
) -> bootstrap.Pending:
    """What ``host bootstrap NAME`` would change (reads the host through its host-layer shell,
    and ``server_cert``; changes nothing); ``bootstrap.finish`` carries it out. Raises
    ``BootstrapError`` or ``HostShellError``."""
    opener = open_shell(read.fleet, site)
    return bootstrap.survey_host(
        read.fleet, read.path, name, opener, listen=listen, replace=replace_cert
    )
