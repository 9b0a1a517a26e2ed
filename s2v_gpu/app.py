"""The Hydra side of the command-line apps (run, report, aggregate): composition, strict keys, exit
codes and one-line errors. The apps' work lives in plain functions that know nothing of Hydra.

Exit status: 0 done; 1 nothing could be processed (or, in a multirun, a job failed or wrote
nothing: ``sweep_summary.tsv`` says which and why); 2 a configuration error — from Hydra's
composition (unknown key or option, wrong type, a value outside an Enum), from the schema (keys
added with ``+``) or from our checks — reported on one line naming the key, before any work.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("s2v_gpu.app")


def one_line(exc: BaseException) -> str:
    """A Hydra / OmegaConf / ConfigError message on one line: what failed, why, and the full key."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        parts += [ln for ln in lines if not ln.startswith(("object_type", "reference_type"))
                  and "HYDRA_FULL_ERROR" not in ln]
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    text = "; ".join(dict.fromkeys(parts))
    if _is_lexer_error(text):
        text += (" (Hydra could not read that override: quote the value, e.g. \"key='/data/Données'\", for "
                 "non-ASCII letters, spaces and characters such as = , [ ] { } ( ) ' \")")
    return text


#: what Hydra's override grammar says of a value it cannot lex or parse
_LEXER_ERRORS = ("LexerNoViableAltException", "token recognition error", "mismatched input", "no viable alternative",
                 "extraneous input", "override_grammar")


def _is_lexer_error(text: str) -> bool:
    return any(marker in text for marker in _LEXER_ERRORS)


def refuse(message: str) -> None:
    """Exit 2 with one line on stderr."""
    print(f"configuration error: {message}", file=sys.stderr)
    sys.exit(2)


def print_version_and_exit() -> None:
    """``--version`` on any of the console commands: the package version, then exit 0."""
    if "--version" in sys.argv[1:]:
        from . import __version__

        print(f"s2v_gpu {__version__}")
        sys.exit(0)


def hydra_app(config_name: str, schema: type, job: Callable[[Any], int], refusals: tuple[type, ...] = ()) -> None:
    """Run ``job(cfg)`` (``cfg`` an instance of ``schema``) as the Hydra app of ``conf/config_name``.

    ``job`` returns the exit status of a single run. ``refusals``: exception types that mean "the
    configuration or the output folder is wrong" (exit 2, one line), besides Hydra's and OmegaConf's.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from . import callbacks
    from .config import ConfigError, unknown_keys

    print_version_and_exit()
    refusals = (ConfigError, *refusals)
    status: dict = {"code": 0, "refused": None}

    @hydra.main(version_base="1.3", config_path="pkg://s2v_gpu.conf", config_name=config_name)
    def task(dcfg) -> None:
        single = HydraConfig.get().mode != RunMode.MULTIRUN
        try:
            bad = unknown_keys(dcfg, schema)
            if bad:
                raise ConfigError(f"unknown key {bad[0]}")
            code = job(OmegaConf.to_object(dcfg))
            if single:
                status["code"] = code
        except refusals as exc:
            if single:  # reported after Hydra returns, on one line (raising here makes Hydra print more)
                status["refused"] = exc
                return
            callbacks.record_job(Path(HydraConfig.get().runtime.output_dir), "refused", str(exc))
            log.error("configuration error: %s", exc)

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing: we report
    try:
        task()
    except (*refusals, HydraException, OmegaConfBaseException) as exc:
        refuse(one_line(exc))
    if status["refused"] is not None:
        refuse(one_line(status["refused"]))
    if callbacks.SWEEP_FAILED:
        log.error("sweep: %s", "; ".join(callbacks.SWEEP_FAILED))
        sys.exit(1)
    sys.exit(status["code"])


# ------------------------------------------------------------------------------------- the run app
#: Keys whose sweep does not need a folder of its own (sites get one; devices give the same data).
NOT_SEPARATED = ("site", "device", "data", "paths.", "progress", "report", "stac", "cache", "overwrite", "hydra/",
                 "hydra.")


def _swept_keys(sweep_dir: Path) -> set[str]:
    """Keys swept by the multirun (values with commas or sweep functions), read from multirun.yaml."""
    from omegaconf import OmegaConf

    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return set()
    overrides = OmegaConf.load(path).hydra.overrides.task
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides
            if "=" in o and ("," in o.split("=", 1)[1] or "(" in o.split("=", 1)[1])}


def dataset_dir(base: str) -> Path:
    """``paths.dataset``; in a sweep of thresholds, ``paths.dataset/<swept key=value,...>`` so that each
    combination has its own folder (sweeping sites or devices only writes into ``paths.dataset``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return Path(base)
    swept = {k for k in _swept_keys(Path(hc.sweep.dir)) if not k.startswith(NOT_SEPARATED)}
    parts = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
    return Path(base) / ",".join(sorted(parts)) if parts else Path(base)


def launcher_threads(launcher) -> int:
    """The CPU threads a multirun job may use, from its launcher preset: submitit's ``cpus_per_task``,
    or the cores divided by joblib's ``n_jobs`` (0: no hint, the run resolves them itself)."""
    from .threads import available_cores

    cpus, n_jobs = launcher.get("cpus_per_task"), launcher.get("n_jobs")
    if isinstance(cpus, int) and cpus > 0:
        return min(cpus, available_cores())
    if isinstance(n_jobs, int) and n_jobs > 1:
        return max(1, available_cores() // n_jobs)
    return 0


def run_app(execute: Callable, *refusals: type) -> None:
    """``python -m s2v_gpu.run``: one site per job; a job's ``summary.json`` in Hydra's output folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from . import callbacks
    from .config import RunConfig

    def job(cfg: RunConfig) -> int:
        hc = HydraConfig.get()
        job_num = None if hc.mode != RunMode.MULTIRUN else hc.job.num
        if job_num is not None and cfg.device.threads == 0:
            cfg.device.threads = launcher_threads(hc.launcher)
        from .harvest.catalog import CatalogError

        try:
            summary = execute(cfg, dataset_dir(cfg.paths.dataset), job_num)
        except CatalogError as exc:  # data=geodes: the catalogue cannot be reached: nothing to build
            log.error("%s", exc)
            callbacks.record_job(Path(hc.runtime.output_dir), "failed", str(exc))
            return 1
        ok = summary["pairs_in_dataset"] > 0
        callbacks.record_job(Path(hc.runtime.output_dir), "ok" if ok else "empty",
                             "" if ok else f"nothing could be processed for site {summary['site']}",
                             {k: v for k, v in summary.items() if k != "config"})
        if not ok:
            log.error("nothing could be processed for site %s", summary["site"])
        return 0 if ok else 1

    hydra_app("config", RunConfig, job, refusals)
