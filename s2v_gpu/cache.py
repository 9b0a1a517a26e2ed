"""A per-pair cache for sweeps of the selection thresholds.

``outlier_rmse`` and ``max_residual_m`` act after everything costly (read, registration, shift, MTF,
fit, the random draw): a pair computed up to there (:class:`~s2v_gpu.pipeline.Prepared`), or the
reason it was skipped before, is saved under ``paths.dataset/.s2v_cache/`` with the hash of all that
produced it — the method configuration without those two thresholds, the product files (names,
sizes, modification times), the device type, the software versions and the package's own source —
so each further job of a sweep starts from it. Any other change gives another hash, hence a
computation from scratch.

Files hold tensors, numbers and strings only (read with ``torch.load(weights_only=True)``: a file put
there by someone else cannot run code); a damaged or foreign file is recomputed and replaced. Jobs
running at once wait on a per-pair lock, so a pair is computed once. Nothing here is ever deleted by
the program: ``rm -r DATASET/.s2v_cache`` frees the space (about 1.6 MB per drawn candidate patch).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from .config import RunConfig, method_config
from .grids import CommonGrid
from .pairing import Pair
from .pipeline import Candidates, Prepared
from .registration import RegistrationResult
from .writer import atomic_write, own_subfolder

log = logging.getLogger(__name__)

CACHE_DIR = ".s2v_cache"
FORMAT = 1
#: the settings that act after the cached point: a sweep over them reuses the cache
THRESHOLDS = ("outlier_rmse", "max_residual_m")
_TENSORS = ("ids", "s10", "s20", "v10", "v20", "v5_10", "v5_20", "w10", "w20")


def _files(product: Path) -> list:
    paths = [product] if product.is_file() else sorted(p for p in product.rglob("*") if p.is_file())
    return [[str(p.relative_to(product.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the package's own source: an edited checkout with an unchanged version number still
    never reuses what the previous code computed."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def run_fingerprint(cfg: RunConfig, device: torch.device, versions: dict) -> dict:
    """What shapes every pair's :class:`Prepared` in a run: the method configuration without the
    thresholds (nor the file naming), the device type, the software and the package source."""
    method = method_config(cfg)
    method.pop("layout", None)  # names only
    for key in THRESHOLDS:
        method["pipeline"]["selection"].pop(key, None)
    return {"format": FORMAT, "method": method, "device": device.type, "software": versions,
            "code": code_fingerprint()}


def pair_key(run: dict, pair: Pair) -> str:
    """The hash of :func:`run_fingerprint` and the pair's product files (32 hex digits)."""
    what = {**run, "products": [_files(pair.venus), _files(pair.s2)], "pair": pair.pair_id}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def to_record(prep: Prepared) -> dict:
    """Tensors, numbers and strings only."""
    c = prep.cand
    tensors = {"ids": c.ids, "s10": c.s10, "s20": c.s20, "v10": c.v10, "v20": c.v20, "v5_10": prep.v5_10,
               "v5_20": prep.v5_20, "w10": prep.w10, "w20": prep.w20}
    g = prep.grid
    meta = {"grid": [g.crs.to_string(), g.left, g.top, g.width, g.height], "venus_zenith": prep.venus_zenith,
            "reg": dataclasses.asdict(prep.reg), "n_total": c.n_total, "q": prep.q, "n_valid": prep.n_valid,
            "fit_excluded": prep.fit_excluded, "fit_pixels": list(prep.fit_pixels), "timings": prep.timings}
    if c.swir is not None:
        tensors["swir"] = c.swir
    return {"format": FORMAT, "tensors": {k: v.cpu() for k, v in tensors.items()},
            "meta": json.dumps(meta, default=float)}


def from_record(record: dict, device: torch.device) -> Prepared:
    """The :class:`Prepared` of a record (KeyError / ValueError / TypeError when it is not one)."""
    from rasterio.crs import CRS

    if record.get("format") != FORMAT:
        raise ValueError(f"format {record.get('format')!r}")
    t = {k: record["tensors"][k].to(device) for k in _TENSORS}
    meta = json.loads(record["meta"])
    crs, left, top, width, height = meta["grid"]
    reg = meta["reg"]
    reg = RegistrationResult(**{**reg, **{k: tuple(reg[k]) for k in ("shift_m", "shift_px", "median_m",
                                                                        "sift_shift_m")}})
    swir = record["tensors"].get("swir")
    cand = Candidates(t["ids"], int(meta["n_total"]), t["s10"], t["s20"], t["v10"], t["v20"],
                      None if swir is None else swir.to(device))
    _check_shapes(t)
    return Prepared(CommonGrid(CRS.from_user_input(crs), float(left), float(top), int(width), int(height)),
                    float(meta["venus_zenith"]), reg, cand, t["v5_10"], t["v5_20"], float(meta["q"]), t["w10"],
                    t["w20"], int(meta["n_valid"]), int(meta["fit_excluded"]), tuple(meta["fit_pixels"]),
                    dict(meta["timings"]))


def _check_shapes(t: dict) -> None:
    """A record's tensors are what :func:`to_record` writes (anything else is refused, recomputed)."""
    n = t["ids"].shape[0]
    ok = t["ids"].dtype == torch.int64 and t["ids"].dim() == 1 and t["w10"].shape == t["w20"].shape == (5, 4)
    for key in ("s10", "s20", "v10", "v20", "v5_10", "v5_20"):
        x = t[key]
        ok &= x.dim() == 4 and x.shape[0] == n and x.shape[1] == 4 and x.shape[2] == x.shape[3]
        ok &= x.dtype in (torch.float32, torch.float64, torch.int16)
    size = t["v5_10"].shape[-1]
    ok &= t["s10"].shape[-1] * 2 == t["s20"].shape[-1] * 4 == size == t["v5_20"].shape[-1]
    if not ok:
        raise ValueError("tensors of unexpected shapes or types")


class PairCache:
    """The cache folder of a dataset: :meth:`slot` locks a pair's entry, :meth:`load` / :meth:`save`."""

    def __init__(self, root: Path, cfg: RunConfig, device: torch.device, versions: dict) -> None:
        self.dir = own_subfolder(Path(root), CACHE_DIR)
        self.device = device
        self._run = run_fingerprint(cfg, device, versions)
        self._paths: dict[str, Path] = {}  # pair id -> entry (its product files are stat'ed once)

    def path(self, pair: Pair) -> Path:
        if pair.pair_id not in self._paths:
            self._paths[pair.pair_id] = self.dir / f"{pair.pair_id}.{pair_key(self._run, pair)}.pt"
        return self._paths[pair.pair_id]

    @contextmanager
    def slot(self, pair: Pair):
        """Hold the pair's lock (another job computing it finishes first)."""
        path = self.path(pair)
        with open(path.with_suffix(".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, path: Path) -> Prepared | str | None:
        """The pair's :class:`Prepared`, the reason it was skipped, or None (not cached or unusable)."""
        if not path.is_file():
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(record, dict) and isinstance(record.get("skipped"), str):
                return record["skipped"]
            return from_record(record, self.device)
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed
            log.warning("cache entry %s unusable (%s): recomputed", path, exc)
            return None

    def save(self, path: Path, outcome: Prepared | str) -> None:
        record = {"format": FORMAT, "skipped": outcome} if isinstance(outcome, str) else to_record(outcome)
        atomic_write(path, lambda tmp: torch.save(record, tmp))
