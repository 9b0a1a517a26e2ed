"""Quality report of a generated dataset (the figures of the paper's section 3).

``python -m s2v_gpu.report paths.dataset=DATASET`` (also written at the end of every run) writes into
``DATASET/report/``: PNG figures, ``metrics.tsv`` (MAE and RMSE per site and band), ``report.html``
(one page showing the figures and tables, referencing the PNGs beside it) and ``report.json``.

Metrics (paper section 3.1): for each site, a seeded random selection of ``n_patches`` patches from at
most ``max_pairs`` pairs; VENuS downsampled to the Sentinel-2 resolution with the per-band MTF
Gaussian; MAE and RMSE per band against Sentinel-2. Flags: a band/site with MAE > ``max_mae`` (0.01)
or RMSE > ``max_rmse`` (0.03), pairs whose registration is weak (few matches or a large spread).
"""

from __future__ import annotations

import html
import json
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .bands import GROUP_10M, GROUP_20M
from .dataset import PairEntry, read_index
from .mtf import band_sigmas_px, mtf_downsample
from .output import SCALE

log = logging.getLogger(__name__)

BANDS = list(GROUP_10M["s2"]) + list(GROUP_20M["s2"])
GROUPS = {  # band group -> (VENuS 5 m column, S2 column, factor, S2 resolution)
    "10m": ("tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8", 2, 10.0, GROUP_10M["s2"]),
    "20m": ("tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a", 4, 20.0, GROUP_20M["s2"]),
}


@dataclass
class ReportConfig:
    n_patches: int = 200  # paper: 200 patches per site
    max_pairs: int = 10  # paper: from at most 10 pairs (its figure captions say 20)
    seed: int = 0
    max_mae: float = 0.01
    max_rmse: float = 0.03
    weak_min_matches: int = 50
    weak_max_spread_m: float = 6.0
    sample_patches: int = 2


@dataclass
class ReportPaths:
    dataset: str = "dataset"
    out: str | None = None  # default: <dataset>/report


@dataclass
class ReportAppConfig:
    paths: ReportPaths = field(default_factory=ReportPaths)
    report: ReportConfig = field(default_factory=ReportConfig)


def _load(entry: PairEntry, column: str) -> torch.Tensor:
    return torch.load(entry.folder / entry.files[column], mmap=True, weights_only=True)


def select_patches(entries: list[PairEntry], cfg: ReportConfig) -> list[tuple[PairEntry, int]]:
    """The seeded selection of one site: at most ``max_pairs`` pairs, then ``n_patches`` patches."""
    rng = random.Random(cfg.seed)
    pairs = sorted(entries, key=lambda e: e.pair_id)
    pairs = rng.sample(pairs, min(cfg.max_pairs, len(pairs)))
    pool = [(e, j) for e in sorted(pairs, key=lambda e: e.pair_id) for j in range(e.n)]
    return sorted(rng.sample(pool, min(cfg.n_patches, len(pool))), key=lambda x: (x[0].pair_id, x[1]))


def site_metrics(selection: list[tuple[PairEntry, int]]) -> dict[str, dict[str, float]]:
    """MAE and RMSE per band between Sentinel-2 and MTF-downsampled VENuS on the selected patches."""
    out = {}
    for group, (vcol, scol, factor, res, bands) in GROUPS.items():
        errors = []
        by_pair: dict[str, list[int]] = {}
        entry_of = {}
        for e, j in selection:
            by_pair.setdefault(e.pair_id, []).append(j)
            entry_of[e.pair_id] = e
        for pid, idx in by_pair.items():
            e = entry_of[pid]
            v = _load(e, vcol)[idx].double() / SCALE
            s = _load(e, scol)[idx].double() / SCALE
            low = mtf_downsample(v, band_sigmas_px(bands, res), factor)
            errors.append((low - s).permute(1, 0, 2, 3).reshape(len(bands), -1))
        err = torch.cat(errors, dim=1)
        for b, row in zip(bands, err):
            out[b] = {"mae": float(row.abs().mean()), "rmse": float(row.pow(2).mean().sqrt())}
    return out


def build_report(dataset: str | Path, cfg: ReportConfig | None = None, out: str | Path | None = None) -> dict:
    """Compute the metrics, draw the figures, write the HTML page. Returns the report as a dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = cfg or ReportConfig()
    dataset = Path(dataset)
    out = Path(out) if out else dataset / "report"
    out.mkdir(parents=True, exist_ok=True)
    entries = read_index(dataset)
    if not entries:
        raise FileNotFoundError(f"{dataset}: no index.csv with any pair")
    sites = sorted({e.site for e in entries})
    index = pd.concat([pd.read_csv(p, sep="\t") for p in sorted({e.folder / "index.csv" for e in entries})])
    details = [pd.read_csv(e, sep="\t") for e in sorted({e.folder / "pairs_details.tsv" for e in entries})
               if e.exists()]
    details = pd.concat(details) if details else pd.DataFrame()

    metrics, selections = {}, {}
    for site in sites:
        sel = select_patches([e for e in entries if e.site == site], cfg)
        selections[site] = [(e.pair_id, j) for e, j in sel]
        metrics[site] = site_metrics(sel)
    rows = [{"site": s, "band": b, **m} for s, bands in metrics.items() for b, m in bands.items()]
    mdf = pd.DataFrame(rows)
    mdf.to_csv(out / "metrics.tsv", sep="\t", index=False)
    flags = [f"{r.site} {r.band}: MAE {r.mae:.4f} > {cfg.max_mae}" for r in mdf.itertuples() if r.mae > cfg.max_mae]
    flags += [f"{r.site} {r.band}: RMSE {r.rmse:.4f} > {cfg.max_rmse}" for r in mdf.itertuples()
              if r.rmse > cfg.max_rmse]
    weak = []
    if len(details):
        for r in details.itertuples():
            if r.n_matches < cfg.weak_min_matches or r.shift_spread_m > cfg.weak_max_spread_m:
                weak.append(f"{r.pair_id}: {r.n_matches} matches, spread {r.shift_spread_m:.2f} m")

    figures = {}

    def save(fig, name, title):
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        figures[name] = title

    counts = index.groupby("vns_site")
    fig, ax = plt.subplots(figsize=(6, 3))
    counts.size().reindex(sites).plot.bar(ax=ax, color="tab:blue")
    ax.set_ylabel("pairs")
    save(fig, "pairs_per_site", "Pairs per site (paper Fig. 5)")

    fig, ax = plt.subplots(figsize=(7, 3))
    for k, s in enumerate(sites):
        dates = pd.to_datetime(index.loc[index["vns_site"] == s, "date"])
        ax.plot(dates, [k] * len(dates), "o", ms=4)
    ax.set_yticks(range(len(sites)), sites)
    save(fig, "dates_per_site", "Acquisition dates per site (paper Fig. 6)")

    fig, ax = plt.subplots(figsize=(6, 3))
    if len(details):
        site_of = {r.pair_id: r.pair_id.rsplit("_", 2)[0] for r in details.itertuples()}
        data = [details.loc[[site_of[p] == s for p in details["pair_id"]], "dt_minutes"] for s in sites]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(sites) + 1), sites)
    ax.set_ylabel("Δt S2 − VENµS (min)")
    save(fig, "time_deltas", "Time deltas (paper Fig. 7)")

    fig, ax = plt.subplots(figsize=(6, 3))
    counts["nb_patches"].sum().reindex(sites).plot.bar(ax=ax, color="tab:green")
    ax.set_ylabel("patches")
    save(fig, "patches_per_site", "Patches per site (paper Fig. 8)")

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.boxplot([index.loc[index["vns_site"] == s, "nb_patches"] for s in sites])
    ax.set_xticks(range(1, len(sites) + 1), sites)
    ax.set_ylabel("patches per pair")
    save(fig, "patches_per_pair", "Patches per pair (paper Fig. 9)")

    for metric, fig_no in (("mae", 10), ("rmse", 11)):
        table = mdf.pivot(index="site", columns="band", values=metric).reindex(columns=BANDS)
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.4 * len(sites)))
        im = ax.imshow(table.values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(BANDS)), BANDS)
        ax.set_yticks(range(len(table.index)), table.index)
        for (i, j), v in np.ndenumerate(table.values):
            ax.text(j, i, f"{v:.4f}", ha="center", va="center", color="w", fontsize=7)
        fig.colorbar(im, ax=ax)
        save(fig, metric, f"{metric.upper()} per band and site (paper Fig. {fig_no})")

    if len(details):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        axes[0].scatter(details["shift_dx_m"], details["shift_dy_m"], c=details["n_matches"], cmap="plasma")
        axes[0].set_xlabel("dx east (m)")
        axes[0].set_ylabel("dy north (m)")
        axes[0].set_title("registration shifts")
        drop = details.set_index("pair_id")[["dropped_invalid", "fit_excluded", "dropped_selection",
                                             "dropped_outlier", "patches_kept"]]
        drop.plot.barh(stacked=True, ax=axes[1], legend=True, fontsize=6)
        axes[1].set_title("patches by rule")
        save(fig, "shifts_and_drops", "Registration shifts and patches dropped by each rule")

    _sample_figure(entries, cfg, plt, save)

    report = {"sites": sites, "metrics": metrics, "flags": flags, "weak_registrations": weak,
              "selection": selections, "figures": list(figures)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.html").write_text(_html(report, figures, mdf, index, details))
    log.info("quality report written to %s (%d flags, %d weak registrations)", out / "report.html", len(flags),
             len(weak))
    return report


def _sample_figure(entries, cfg, plt, save) -> None:
    """Sample patches as in the paper's Fig. 12: RGB and colour-mapped NIR, 5 m beside 10 / 20 m."""
    rng = random.Random(cfg.seed + 1)
    picks = [rng.choice([(e, j) for e in entries for j in range(e.n)]) for _ in range(cfg.sample_patches)]
    cols = ["S2 10 m RGB", "VENµS 5 m RGB", "S2 10 m B8", "VENµS 5 m B8", "S2 20 m B7B6B5", "VENµS 5 m B7B6B5",
            "S2 20 m B8A", "VENµS 5 m B8A"]
    fig, axes = plt.subplots(len(picks), 8, figsize=(16, 2.2 * len(picks)), squeeze=False)
    for r, (e, j) in enumerate(picks):
        s10 = _load(e, "tensor_10m_b2b3b4b8")[j].float() / SCALE
        v10 = _load(e, "tensor_05m_b2b3b4b8")[j].float() / SCALE
        s20 = _load(e, "tensor_20m_b5b6b7b8a")[j].float() / SCALE
        v20 = _load(e, "tensor_05m_b5b6b7b8a")[j].float() / SCALE
        rgb_max = float(s10[:3].quantile(0.99))
        re_max = float(s20[:3].quantile(0.99))
        nir = (float(s10[3].min()), float(s10[3].max()))
        nira = (float(s20[3].min()), float(s20[3].max()))
        images = [
            (s10[[2, 1, 0]].permute(1, 2, 0) / rgb_max).clamp(0, 1), (v10[[2, 1, 0]].permute(1, 2, 0) / rgb_max).clamp(0, 1),
            s10[3], v10[3], (s20[[2, 1, 0]].permute(1, 2, 0) / re_max).clamp(0, 1),
            (v20[[2, 1, 0]].permute(1, 2, 0) / re_max).clamp(0, 1), s20[3], v20[3],
        ]
        for c, img in enumerate(images):
            ax = axes[r, c]
            if img.dim() == 2:
                lo, hi = nir if c < 4 else nira
                ax.imshow(img.numpy(), cmap="RdYlGn", vmin=lo, vmax=hi)  # the same scale at 5 m and S2 res
            else:
                ax.imshow(img.numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
        axes[r, 0].set_ylabel(f"{e.pair_id}\n#{j}", fontsize=6)
    save(fig, "sample_patches", "Sample patches (paper Fig. 12)")


def _html(report, figures, mdf, index, details) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>s2v_gpu quality report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}.flag{color:#b00}</style></head><body>",
             "<h1>Quality report</h1>",
             f"<p>{len(index)} pairs, {int(index['nb_patches'].sum())} patches, sites: "
             f"{esc(', '.join(report['sites']))}</p>", "<h2>Flags</h2><ul>"]
    items = report["flags"] + [f"weak registration: {w}" for w in report["weak_registrations"]]
    parts += [f"<li class='flag'>{esc(f)}</li>" for f in items] or ["<li>none</li>"]
    parts.append("</ul><h2>MAE and RMSE per site and band</h2>")
    parts.append(mdf.pivot(index="site", columns="band", values="mae").to_html(float_format="%.4f"))
    parts.append(mdf.pivot(index="site", columns="band", values="rmse").to_html(float_format="%.4f"))
    for name, title in figures.items():
        parts.append(f"<h2>{esc(title)}</h2><img src='{name}.png' alt='{esc(title)}'>")
    parts.append("<h2>Pairs</h2>")
    parts.append(index.to_html(index=False))
    if len(details):
        parts.append("<h2>Registration and drops per pair</h2>")
        parts.append(details.drop(columns=["w_10m", "w_20m", "timings"], errors="ignore").to_html(index=False))
    parts.append("</body></html>")
    return "\n".join(parts)


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="report_schema", node=ReportAppConfig)


_register()


def hydra_app(action) -> None:
    """Run ``action(dataset, report_config, out)`` as a Hydra app on the ``report`` config
    (``paths.dataset=... report.n_patches=...``); a dataset without pairs exits with status 1."""
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path="pkg://s2v_gpu.conf", config_name="report")
    def app(dcfg) -> None:
        cfg: ReportAppConfig = OmegaConf.to_object(dcfg)
        try:
            action(cfg.paths.dataset, cfg.report, cfg.paths.out)
        except FileNotFoundError as exc:
            log.error("%s", exc)
            sys.exit(1)

    app()


def main() -> None:
    hydra_app(build_report)


if __name__ == "__main__":
    main()
