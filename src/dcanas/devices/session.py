"""The device's work directory: the runner pushed, its ``--check`` answer parsed, the directory removed
afterwards (on a fresh connection when the old one died). ``dcanas devices check`` and every profile use it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..runtime import runner as R
from .schema import DeviceProfile
from .transport import RMTREE_PY, DeviceError, RemoteCommandError, Transport, make_transport
from ..progress import stderr_line as _stderr

RUNNER = Path(R.__file__)
# Stop the runner recorded in the pid file (if it still runs), then remove the work directory.
CLEANUP_PY = ("import os,shutil,signal,sys\nw=sys.argv[1]\ntry:\n os.kill(int(open(os.path.join(w,'runner.pid')).read()),signal.SIGKILL)\n"
              "except Exception:\n pass\nshutil.rmtree(w,ignore_errors=True)\nprint(os.path.exists(w))")

# Remove the work folders of runners that were killed (their pid file names a process that is gone; a runner that ends
# removes its pid file; a zombie counts as gone) and folders without a pid file untouched for an hour; print what was removed.
STALE_PY = """import glob,os,shutil,sys,tempfile,time
d=sys.argv[1] or tempfile.gettempdir()
for w in glob.glob(os.path.join(d,'dcanas-*')):
    if os.path.islink(w) or not os.path.isdir(w):
        continue
    p=os.path.join(w,'runner.pid')
    try:
        pid=int(open(p).read())
    except (OSError,ValueError):
        pid=None
    if pid is None:
        if os.path.exists(p) or time.time()-os.path.getmtime(w)<3600:
            continue
    else:
        try:
            os.kill(pid,0)
            if open('/proc/%d/stat'%pid).read().rsplit(')',1)[1].split()[0]!='Z':
                continue
        except ProcessLookupError:
            pass
        except OSError:
            continue
    shutil.rmtree(w,ignore_errors=True)
    print('dcanas-removed '+w)
"""
REMOVED = "dcanas-removed "  # the mark on each line STALE_PY prints: a login banner on stdout is not taken for a folder

Progress = Callable[[str], None]


def fresh_workdir(t: Transport, profile: DeviceProfile, progress: Progress) -> str:
    """A new ``dcanas-XXXX`` folder in ``connection.workdir`` (default: the device's temp folder), after removing the
    folders that killed profiles left there."""
    try:
        out = t.py(STALE_PY, profile.connection.workdir or "", timeout=60, check=False).stdout
        stale = [line[len(REMOVED):] for line in out.splitlines() if line.startswith(REMOVED)]
    except DeviceError:
        stale = []
    if stale:
        progress(f"[cleanup] removed {len(stale)} work folder(s) left by killed profiles: {', '.join(stale)}")
    try:
        return t.mkdtemp(profile.connection.workdir)
    except RemoteCommandError as exc:
        where = profile.connection.workdir or "the device's temporary folder"
        raise DeviceError(f"{t.describe()}: cannot create a work folder in {where} ({exc.tail}); set connection.workdir in "
                          f"{profile.source or 'the profile'} to an existing folder the device user can write") from None


def _parse(stdout: str, where: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise DeviceError(f"{where}: the runner printed no result ({stdout.strip()[-200:]!r})")


def cleanup(transport: Transport, profile: DeviceProfile, wd: str, progress: Progress) -> None:
    """Stop the runner and remove ``wd``; on a fresh connection when the old one died. Never raises:
    what could not be removed is said, with where it is."""
    why = "no answer"
    for fresh in (False, True):
        if not fresh and not transport.alive():
            continue
        t = make_transport(profile, warn=progress) if fresh else transport
        try:
            if fresh:
                t.connect(retries=0, timeout=min(5.0, profile.connection.connect_timeout_s))
            r = t.py(CLEANUP_PY, wd, timeout=20, check=False)
            if r.rc == 0 and r.stdout.strip().endswith("False"):
                if fresh:
                    progress(f"[cleanup] removed {wd} on a fresh connection")
                return
            why = (r.stderr.strip().splitlines() or [f"exit code {r.rc}"])[-1]
        except Exception as exc:  # noqa: BLE001 - cleanup must never hide the error that brought us here
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            if fresh:
                t.close()
    progress(f"[cleanup] WARNING: could not remove {wd} on {profile.name} ({why}); remove it by hand: "
             f"{profile.connection.python} -c {RMTREE_PY!r} {wd}")


def check_device(profile: DeviceProfile, progress: Progress = _stderr) -> dict[str, Any]:
    """Connect and report Python, machine, CPU, cores, memory, disk and importable runtimes."""
    with make_transport(profile, warn=progress) as t:
        progress(f"connected to {t.describe()}")
        wd = fresh_workdir(t, profile, progress)
        try:
            t.put(RUNNER, f"{wd}/runner.py")
            r = t.run([t.python, f"{wd}/runner.py", "--check"], timeout=120)
            info = _parse(r.stdout, t.describe())
        finally:
            cleanup(t, profile, wd, progress)
    info["transport"] = t.describe()
    return info
