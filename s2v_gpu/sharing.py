"""Jobs sharing a machine: each running job holds a slot, and the automatic thread count divides the
job's cores among the jobs that share them.

Two jobs of 2 threads on 2 cores each take 2.6x a lone job's wall time even with yielding OpenMP
threads (``OMP_WAIT_POLICY=PASSIVE``), 15x without: oversubscribed threads wait for each other.
With ``device.threads`` left automatic and no scheduler's count (``SLURM_CPUS_PER_TASK``,
``OMP_NUM_THREADS``, ``S2V_THREADS``), a job counts the live jobs whose cores overlap its own and
takes its share of the cores, again before each pair: a job started beside a running one slows it
from its next pair on, and a job that ends gives its cores back the same way.

A slot is a file in ``S2V_JOBS_DIR`` (default: ``$TMPDIR/s2v_gpu-jobs-UID``) locked with ``flock`` for
the job's life and listing its cores; the kernel releases the lock however the job ends, so a dead
job's slot is recognised (its lock can be taken) and removed by the next count.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path

__all__ = ["JobSlot", "active_slot", "jobs_dir"]

log = logging.getLogger(__name__)

_ACTIVE: JobSlot | None = None


def jobs_dir() -> Path:
    return Path(os.environ.get("S2V_JOBS_DIR") or Path(tempfile.gettempdir()) / f"s2v_gpu-jobs-{os.getuid()}")


def active_slot() -> JobSlot | None:
    """The slot this process holds (None outside a run)."""
    return _ACTIVE


class JobSlot:
    """The slot of a running job (a context manager); :meth:`sharing` counts the jobs on its cores."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else jobs_dir()
        self.cores = set(os.sched_getaffinity(0))
        self.path: Path | None = None
        self._fh = None

    def __enter__(self) -> JobSlot:
        global _ACTIVE
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.folder.stat()
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                # another user's folder, or one others may write: their files would steer our threads
                log.warning("%s is not a private folder of this user: threads are not shared with other jobs",
                            self.folder)
                return self
            name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.slot"
            tmp = self.folder / f".{name}"
            fh = open(tmp, "w")
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            json.dump({"pid": os.getpid(), "cores": sorted(self.cores)}, fh)
            fh.flush()
            os.replace(tmp, self.folder / name)  # visible only once locked: never taken for a dead job's
            self.path, self._fh = self.folder / name, fh
            _ACTIVE = self
        except OSError as exc:  # a read-only or foreign tmp: the job runs, as if alone
            log.warning("cannot register the job in %s (%s): threads are not shared with other jobs", self.folder,
                        exc.strerror or exc)
        return self

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        if _ACTIVE is self:
            _ACTIVE = None

    def sharing(self) -> int:
        """Live jobs (this one included) whose cores overlap this job's; dead jobs' slots removed."""
        if self._fh is None:
            return 1
        count = 0
        for path in self.folder.glob("*.slot"):
            if path == self.path:
                count += 1
                continue
            cores = _live_cores(path)
            if cores is not None and cores & self.cores:
                count += 1
        return max(1, count)


def _live_cores(path: Path) -> set[int] | None:
    """The cores of a live job's slot; None for a dead job's (its slot is then removed)."""
    try:
        fh = open(path)
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: the job is alive
            try:
                return set(json.loads(fh.read()).get("cores", []))
            except (ValueError, AttributeError):
                return set()
        path.unlink(missing_ok=True)  # nobody holds it: its job is gone
        return None
