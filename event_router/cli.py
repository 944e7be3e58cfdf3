"""``event-router``: the standalone router, with the original VMware Event Router's flags.

Flags work with one dash (as the original's Go flags) or two: ``-config PATH``,
``-log-json``, ``-log-level debug|info|warn|error``, plus ``-version``, ``-validate`` and
``-shutdown-timeout SECONDS``. ``-flag=value`` works too.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT) or a valid ``-validate``; 1 when the
router fails to start or stops with an error; 2 for an invalid config or bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from event_router import __version__
from event_router.config.loader import (
    CREDENTIALS_DIR_ENV,
    ConfigError,
    check_files,
    load_config,
)
from event_router.config.models import BasicAuth, RouterConfig
from event_router.kubeclient import ENV_NAMESPACE, own_namespace
from event_router.logsetup import LEVELS, REDACTOR, setup_logging

if TYPE_CHECKING:
    from event_router.checkpoints import Checkpoint, CheckpointStore
    from event_router.core import RouterContext
    from event_router.leader import LeaderElector

DEFAULT_CONFIG = "/etc/vmware-event-router/config"
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
ENV_CHECKPOINT_CONFIGMAP = "EVENT_ROUTER_CHECKPOINT_CONFIGMAP"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Ctrl-C before the router ran (while reading or validating the config): 128 + SIGINT
EXIT_INTERRUPTED = 130

log = logging.getLogger("event_router.cli")

BANNER = r"""
                          _                          _
  _____   _____ _ __ | |_      _ __ ___  _   _| |_ ___ _ __
 / _ \ \ / / _ \ '_ \| __|____| '__/ _ \| | | | __/ _ \ '__|
|  __/\ V /  __/ | | | ||_____| | | (_) | |_| | ||  __/ |
 \___| \_/ \___|_| |_|\__|    |_|  \___/ \__,_|\__\___|_|
"""


def _bool(value: str) -> bool:
    """Go's flag package booleans: ``-log-json=true``."""
    text = value.strip().lower()
    if text in ("1", "t", "true", "yes", "on"):
        return True
    if text in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean (allowed: true, false)")


def _level(value: str) -> str:
    text = value.strip().lower()
    if text not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a log level (allowed: debug, info, warn, error)"
        )
    return text


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of seconds (allowed: more than 0, at most 3600)"
        )
    return seconds


class _HelpFormatter(argparse.HelpFormatter):
    """Wider help that never breaks a path at its hyphens."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="event-router",
        description=(
            "Route vSphere, Horizon and webhook events as CloudEvents to Knative, OpenFaaS "
            "or AWS EventBridge. Flags take one dash or two."
        ),
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
    )

    def flag(name: str, **kwargs: Any) -> None:
        parser.add_argument(f"-{name}", f"--{name}", **kwargs)

    flag(
        "config",
        metavar="PATH",
        default=DEFAULT_CONFIG,
        help=f"path to configuration file (default {DEFAULT_CONFIG})",
    )
    flag(
        "log-json",
        dest="log_json",
        nargs="?",
        const=True,
        default=False,
        type=_bool,
        metavar="true|false",
        help="print JSON-formatted logs",
    )
    flag(
        "log-level",
        dest="log_level",
        default="info",
        type=_level,
        metavar="LEVEL",
        help="set log level (debug,info,warn,error) (default 'info')",
    )
    flag(
        "validate",
        nargs="?",
        const=True,
        default=False,
        type=_bool,
        metavar="true|false",
        help="validate the configuration file and exit (0: valid, 2: invalid, one line per error)",
    )
    flag(
        "shutdown-timeout",
        dest="shutdown_timeout",
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        type=_seconds,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long to deliver in-flight events before exiting "
        f"(default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    flag(
        "version",
        nargs="?",
        const=True,
        default=False,
        type=_bool,
        metavar="true|false",
        help="print the version and exit",
    )
    return parser


def version_text() -> str:
    return (
        f"event-router {__version__}\n"
        f"python: {sys.version.split()[0]}\n"
        "compatible with: VMware Event Router config event-router.vmware.com/v1alpha1\n"
    )


def register_secrets(config: RouterConfig) -> None:
    """Hand every credential of the config to the log redactor (defence in depth)."""
    REDACTOR.add(config.secrets())
    for basic in _basic_auths(config):
        REDACTOR.add_basic_auth(basic.username, basic.password.get_secret_value())


def _basic_auths(model: BaseModel) -> list[BasicAuth]:
    found: list[BasicAuth] = []
    for _, value in model:
        if isinstance(value, BasicAuth):
            found.append(value)
        elif isinstance(value, BaseModel):
            found.extend(_basic_auths(value))
    return found


class FencedStore:
    """A checkpoint store that writes only while this replica leads: a leader that lost its
    Lease never moves the checkpoint under the replica that took over."""

    def __init__(self, store: CheckpointStore, elector: LeaderElector) -> None:
        self.store = store
        self.elector = elector

    def describe(self) -> str:
        return self.store.describe()

    async def load(self) -> Checkpoint | None:
        return await self.store.load()

    async def save(self, checkpoint: Checkpoint) -> None:
        if not self.elector.leading:
            raise RuntimeError(
                f"checkpoint {self.describe()}: not written, this replica no longer holds "
                f"{self.elector.store.describe()}"
            )
        await self.store.save(checkpoint)


def leader_elector(environ: Mapping[str, str] | None = None) -> LeaderElector | None:
    """The elector when ``EVENT_ROUTER_LEASE`` names a Lease (the operator's Deployment with
    ``replicas`` > 1 for vcenter and horizon), else None."""
    env = os.environ if environ is None else environ
    name = env.get("EVENT_ROUTER_LEASE", "").strip()
    if not name:
        return None
    from event_router.leader import (
        ENV_LEASE,
        KubernetesLeaseStore,
        LeaderElector,
        identity,
        timing_from_env,
    )

    namespace = own_namespace(env)
    if not namespace:
        raise ConfigError(
            [
                f"{ENV_NAMESPACE}: required when {ENV_LEASE} is set "
                "(got nothing, and no service account namespace file)"
            ]
        )
    try:
        timing = timing_from_env(env)
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    store = KubernetesLeaseStore(namespace, name, timing.request_timeout)
    return LeaderElector(store, identity(env), timing)


def checkpoint_store_factory(
    environ: dict[str, str] | None = None,
    elector: LeaderElector | None = None,
) -> Callable[[str], CheckpointStore] | None:
    """ConfigMap checkpoints when ``EVENT_ROUTER_CHECKPOINT_CONFIGMAP`` is set (the
    operator's Deployment), else None (providers use files in ``checkpointDir``)."""
    env = os.environ if environ is None else environ
    name = env.get(ENV_CHECKPOINT_CONFIGMAP, "").strip()
    if not name:
        return None
    namespace = own_namespace(env)
    if not namespace:
        raise ConfigError(
            [
                f"{ENV_NAMESPACE}: required when {ENV_CHECKPOINT_CONFIGMAP} is set "
                "(got nothing, and no service account namespace file)"
            ]
        )
    from event_router.checkpoints import ConfigMapStore

    def factory(key: str) -> CheckpointStore:
        store: CheckpointStore = ConfigMapStore(namespace, name, key)
        return FencedStore(store, elector) if elector is not None else store

    log.info("checkpoints go to ConfigMap %s/%s", namespace, name)
    return factory


def stall_reporter(router: Any, environ: Mapping[str, str] | None = None) -> Any:
    """With ConfigMap checkpoints (the operator's Deployment): the pod's stall report in that
    ConfigMap, which the operator turns into the ``DeliveryStalled`` condition; else None."""
    env = os.environ if environ is None else environ
    name = env.get(ENV_CHECKPOINT_CONFIGMAP, "").strip()
    namespace = own_namespace(env)
    if not name or not namespace:
        return None
    from event_router.leader import ENV_POD_NAME
    from event_router.stallreport import Reporter

    pod = env.get(ENV_POD_NAME, "").strip() or socket.gethostname()
    reporter = Reporter(namespace, name, pod, router.processor_states)
    router.stall_listener = reporter.notify
    return reporter


def _campaign(router: Any, elector: LeaderElector) -> asyncio.Task[None]:
    """The election task: the router leads once the Lease is ours and is fenced the moment
    it is not (then the task ends)."""

    async def started() -> None:
        router.lead()

    async def stopped() -> None:
        router.fence()

    router.election_stats = lambda: {
        "lease": elector.store.describe(),
        "identity": elector.identity,
        "role": elector.role,
        "holder": elector.holder,
        "transitions": elector.transitions,
    }
    return asyncio.create_task(elector.run(started, stopped), name="leader-election")


async def run_router(
    context: RouterContext,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    stop: asyncio.Event | None = None,
    elector: LeaderElector | None = None,
) -> int:
    """Run one router until SIGTERM/SIGINT (or ``stop`` is set) or until it ends.

    With ``elector`` (leader election): a standby until the Lease is ours, then the leader
    until SIGTERM (the Lease is released after the final checkpoint) or until the Lease is
    lost (fenced at once, exit 1 so that the container restarts as a standby).

    Returns the exit code. A second signal during shutdown stops waiting at once.
    """
    from event_router.router import Router

    loop = asyncio.get_running_loop()
    stop_event = stop or asyncio.Event()
    signals_seen = 0
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop_event.set()
        elif main_task is not None:
            log.warning("received %s again: exiting now", signal.Signals(signum).name)
            main_task.cancel()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        try:
            router = Router(context)
        except Exception as exc:
            log.error("cannot create the router: %s", exc)
            return EXIT_FAILED
        try:
            if elector is not None:
                await router.provider.prepare()
            await router.start(lead=elector is None)
        except Exception as exc:
            log.error("router failed to start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            with contextlib.suppress(Exception):
                await router.stop(timeout=min(shutdown_timeout, 5.0))
            return EXIT_FAILED
        code = EXIT_OK
        reporter = stall_reporter(router)
        reporting = asyncio.create_task(reporter.run(), name="stall-report") if reporter else None
        waiter = asyncio.create_task(router.wait(), name="router-wait")
        stopper = asyncio.create_task(stop_event.wait(), name="router-stop-signal")
        tasks = {waiter, stopper}
        election: asyncio.Task[None] | None = None
        if elector is not None:
            election = _campaign(router, elector)
            tasks.add(election)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if election is not None and election.done() and not stop_event.is_set():
                # the Lease is lost: the router is fenced already; exit, and the kubelet
                # restarts the container as a standby
                log.error(
                    "this replica no longer leads: stopped delivering; exiting so that it "
                    "restarts as a standby"
                )
                await router.stop(timeout=0)
                return EXIT_FAILED
            if waiter.done() and not stop_event.is_set():
                err = waiter.exception()
                if err is not None:
                    log.error("router stopped with an error: %s", err)
                else:
                    log.error("router stopped unexpectedly (its event provider ended)")
                code = EXIT_FAILED
            log.info("shutting down (waiting up to %gs for in-flight events)", shutdown_timeout)
            # the election keeps renewing meanwhile: the final checkpoint is written as leader
            await router.stop(timeout=shutdown_timeout)
            if election is not None and elector is not None:
                election.cancel()
                with contextlib.suppress(BaseException):
                    await election
                if elector.holder == elector.identity:
                    await asyncio.to_thread(elector.release)
        except asyncio.CancelledError:
            log.warning("shutdown interrupted; in-flight events may be re-sent after a restart")
            return EXIT_FAILED
        finally:
            for task in (waiter, stopper, *([election] if election else [])):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            if reporting is not None and reporter is not None:
                reporting.cancel()
                with contextlib.suppress(BaseException):
                    await reporting
                if reporter.reported:  # this pod delivers no more: its report goes
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(reporter.write, [])
        return code
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def build_errors(config: RouterConfig) -> list[str]:
    """Build the router of ``config`` (provider, processors, metrics server: no network)
    and run the processors' preflight checks; the errors, one line each. ``-validate`` runs
    this, so whatever it accepts the router starts with."""
    from event_router.core import RouterContext
    from event_router.router import Router

    try:
        router = Router(RouterContext(config=config))
        for slot in router.slots:
            slot.processor.preflight()
            if slot.dead_letter is not None:
                slot.dead_letter.preflight()
    except Exception as exc:  # each component's setup error names its field
        return [str(exc)]
    return []


def _processors_text(config: RouterConfig) -> str:
    """``processor knative 'x'``, or ``processors knative 'x', openfaas 'y'``."""
    procs = config.processors
    listed = ", ".join(f"{p.type} {p.name!r}" for p in procs)
    return f"processor{'s' if len(procs) > 1 else ''} {listed}"


def _print_errors(errors: Sequence[str]) -> None:
    for line in errors:
        print(line, file=sys.stderr)


def _validate(path: str) -> int:
    """``-validate``: one line per problem on stderr and 2, or one line on stdout and 0."""
    try:
        config = load_config(path, credentials_dir=os.environ.get(CREDENTIALS_DIR_ENV))
    except ConfigError as exc:
        _print_errors(exc.errors)
        return EXIT_USAGE
    errors = check_files(config) or build_errors(config)
    if errors:
        _print_errors(errors)
        return EXIT_USAGE
    ep = config.eventProvider
    print(f"{path}: valid (provider {ep.type} {ep.name!r} -> {_processors_text(config)})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: -h (0) or a bad flag (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.version:
        sys.stdout.write(version_text())
        return EXIT_OK

    if args.validate:
        try:
            return _validate(args.config)
        except KeyboardInterrupt:
            print(f"{args.config}: interrupted (Ctrl-C) during -validate", file=sys.stderr)
            return EXIT_INTERRUPTED

    setup_logging(args.log_level, args.log_json)
    if not args.log_json and sys.stderr.isatty():
        sys.stderr.write(BANNER + "\n")
    try:
        config = load_config(args.config, credentials_dir=os.environ.get(CREDENTIALS_DIR_ENV))
        errors = check_files(config)
        if errors:
            raise ConfigError(errors, args.config)
    except KeyboardInterrupt:
        log.error("interrupted (Ctrl-C) while reading the config %s", args.config)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        log.error("invalid config %s (%d problem(s))", args.config, len(exc.errors))
        for line in exc.errors:
            log.error("%s", line)
        return EXIT_USAGE
    register_secrets(config)
    log.info(
        "event-router %s starting: config %s, provider %s %r -> %s",
        __version__,
        args.config,
        config.eventProvider.type,
        config.eventProvider.name,
        _processors_text(config),
    )
    try:
        elector = leader_elector() if config.eventProvider.type != "webhook" else None
        factory = checkpoint_store_factory(elector=elector)
        if elector is not None and factory is None:
            raise ConfigError(
                [
                    f"EVENT_ROUTER_LEASE: leader election needs ConfigMap checkpoints "
                    f"({ENV_CHECKPOINT_CONFIGMAP}), so that a standby resumes where the "
                    "leader stopped"
                ]
            )
    except ConfigError as exc:
        for line in exc.errors:
            log.error("%s", line)
        return EXIT_USAGE

    from event_router.core import RouterContext

    context = RouterContext(config=config, checkpoint_store_factory=factory)
    try:
        return asyncio.run(run_router(context, args.shutdown_timeout, elector=elector))
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
