"""OpenMP threads that yield their core when idle, set before the OpenMP runtime starts.

GNU OpenMP (torch's intra-op pool, and MKL's threads in torch's wheels) lets an idle worker spin for
a while before it sleeps. One job alone loses nothing by it, but two jobs on the same cores steal
each other's time: on a 2-core machine two default jobs took up to 4.6x a lone job's wall time
(see ``docs/speed.md``). ``OMP_WAIT_POLICY=PASSIVE`` makes idle workers sleep at once.

The runtime reads the variable once, when torch's shared library is loaded, so the package's
``__init__`` imports this module before anything that imports torch: every console command, job and
script of the project runs with it. A value the user set is kept (``OMP_WAIT_POLICY=ACTIVE`` spins).
A program that loaded torch before importing s2v_gpu keeps the runtime's default; its child
processes get the policy.
"""

from __future__ import annotations

import os
import sys

__all__ = ["POLICY", "WAIT_POLICY", "WAIT_POLICY_VARIABLE", "yield_idle_threads"]

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
WAIT_POLICY = "PASSIVE"


def yield_idle_threads() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process and its children, unless the user set a policy.

    Returns:
        The policy this process runs with: the user's value, ``PASSIVE``, or ``default`` when torch
        was loaded before this call (its runtime has read its settings: only child processes, such
        as joblib's workers, get the new value then).
    """
    if WAIT_POLICY_VARIABLE in os.environ:
        return os.environ[WAIT_POLICY_VARIABLE]
    too_late = "torch" in sys.modules
    os.environ[WAIT_POLICY_VARIABLE] = WAIT_POLICY
    return "default" if too_late else WAIT_POLICY


#: the policy of this process, decided when a console command first imports this module
POLICY = yield_idle_threads()
