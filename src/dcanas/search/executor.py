"""Where independent searches run (a LUG's grid points): ``local``, a process pool on this machine (the
default, no extra dependency), or ``ray``, one Ray task per search on a local Ray instance or an existing
cluster (``--ray-address``). A Ray task asks for ``cpus`` CPUs and ``gpus`` GPUs, and is retried when its
worker or node dies; since every search checkpoints into its run directory (which must be on a filesystem
every node shares), a retried search resumes from its last finished epoch and yields the result an
uninterrupted one would. Results come back in completion order."""
from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import RECEIVED, TERMINATION, UserError, raise_if_received, signals_noted

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3
PROBE_S = 5.0  # the TCP probe of --ray-address
WAIT_S = 1.0  # how often a Ray wait looks for a termination signal whose exception was lost


def check_executor(name: str, ray_address: Optional[str] = None) -> None:
    """``--executor``: a known name, Ray installed when asked for, and ``--ray-address`` answering (before any work)."""
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'dcanas[ray]' (or pip install ray); "
                            "--executor local runs on this machine without it") from None
        check_ray_address(ray_address)


def check_ray_address(address: Optional[str], timeout_s: float = PROBE_S) -> None:
    """A TCP probe of ``--ray-address`` (seconds): a dead address fails now, named as the user gave it, not after Ray's
    own minutes of retries under another address."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: give HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:10001, or leave it "
                        f"out for a local Ray instance")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); start a cluster "
                        f"there (`ray start --head --port {port}`), or leave --ray-address out for a local Ray instance") from None


def _start_ray(ray: Any, address: Optional[str]) -> None:
    """``ray.init``, with SIGTERM and SIGHUP only noted while it starts and acted on when it returns. Ray installs its
    own SIGTERM handlers there (the driver's ``sys.exit(15)``, the head node's drain-then-exit) and the exception they
    raise is lost when it lands in an at-fork hook (logging's, each time Ray starts a process): "Exception ignored in
    _releaseLock ... SystemExit: 15", then the build either ran to its end with exit code 0 (CI) or hung (here, under
    load). Ray's calls to install a handler are skipped for that time (``ray._private.utils.set_sigterm_handler``;
    a Ray without it installs its own, and the SystemExit branch below still ends the command)."""
    main = threading.current_thread() is threading.main_thread()
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    install = getattr(utils, "set_sigterm_handler", None)
    try:
        with signals_noted(any_handler=True):  # ours stop the tasks and end in one line once it returns
            if install is not None and main:
                utils.set_sigterm_handler = lambda handler: None
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            finally:
                if install is not None and main:
                    utils.set_sigterm_handler = install
    except ConnectionError as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({exc}); start one with "
                        f"`ray start --head`, or leave --ray-address out for a local Ray instance") from None
    except SystemExit as exc:  # a Ray whose handler could not be kept out turns SIGTERM into sys.exit(15)
        if exc.code not in TERMINATION:
            raise
        RECEIVED.append(int(exc.code))
    if RECEIVED:
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the instance may be half started
            pass
        raise_if_received()


def run_all(fn: Callable[..., Any], calls: Sequence[tuple], *, executor: str = "local", jobs: int = 1,
            ray_address: Optional[str] = None, cpus: float = 1, gpus: float = 0) -> Iterator[tuple[int, Any]]:
    """(index into ``calls``, fn(*call)) for every call, as each finishes."""
    check_executor(executor, ray_address)
    if executor == "local":
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(fn, *call): i for i, call in enumerate(calls)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        return
    import ray

    started = not ray.is_initialized()
    if started:
        _start_ray(ray, ray_address)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=RAY_RETRIES)(fn)
    pending = {task.remote(*call): i for i, call in enumerate(calls)}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            raise_if_received()
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    except BaseException:  # Ctrl-C, SIGTERM, a failed task: the other tasks are stopped, not left running on the cluster
        if started:  # our own instance: shutting it down ends its workers
            ray.shutdown()
        else:
            _cancel_unfinished(ray, list(pending))
        raise


def _cancel_unfinished(ray: Any, refs: list) -> None:
    """Cancel the tasks of ``refs`` that have not finished, on a cluster we joined. Only those: Ray 2.60 aborts the driver
    ("Check failed: it != submissible_tasks_.end() Tried to complete task that was not pending", exit code 1) when a
    force-cancel races with the reply of a task that is finishing (seen in CI, a SIGTERM during a local build, when this
    cancelled every task before the shutdown). The window is narrowed here, not closed: it is Ray's."""
    try:
        _, unfinished = ray.wait(refs, num_returns=len(refs), timeout=0)
    except Exception:  # noqa: BLE001 - best effort: the cluster may be gone
        return
    for ref in unfinished:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - best effort
            pass


@dataclass(frozen=True)
class Runner:
    """Where independent searches run: ``jobs`` at a time locally, or Ray tasks of ``cpus`` CPUs and ``gpus``
    GPUs each (a local Ray instance, or the cluster at ``ray_address``)."""

    jobs: int = 1
    executor: str = "local"
    ray_address: Optional[str] = None
    cpus: int = 1
    gpus: float = 0.0

    def threads(self) -> int:
        return self.cpus if self.executor == "ray" else max(1, (os.cpu_count() or 1) // max(1, self.jobs))

    def describe(self) -> str:
        if self.executor == "ray":
            return f"as Ray tasks ({self.cpus} CPU, {self.gpus:g} GPU each{', cluster ' + self.ray_address if self.ray_address else ''})"
        return f"{self.jobs} at a time"

    def run(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """(index into ``calls``, fn(*call)) for every call, as each finishes."""
        return run_all(fn, calls, executor=self.executor, jobs=self.jobs, ray_address=self.ray_address, cpus=self.cpus,
                       gpus=self.gpus)
