"""Building the quality report of a dataset folder: metrics, figures, page, JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import patch_geometries, read_index
from ..layout import DETAILS_FILE, INDEX_FILE, PATCH_COLUMNS, PATCHES_FILE, REPORT_DIR, RESIDUAL_COLUMNS, read_table
from . import figures as F
from .metrics import ReportConfig, select_patches, site_metrics
from .page import render

log = logging.getLogger("s2v_gpu.report")


def _tables(entries) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The index rows and the details rows of the sites (details carry their pair's ``vns_site``)."""
    folders = sorted({e.folder for e in entries})
    index = pd.concat([pd.read_csv(f / INDEX_FILE, sep="\t") for f in folders])
    details = [pd.DataFrame(read_table(f / DETAILS_FILE, ["pair_id"])) for f in folders if (f / DETAILS_FILE).exists()]
    details = pd.concat(details) if details else pd.DataFrame()
    if len(details) and "venus_product_id" in details:
        details = details.merge(index[["venus_product_id", "vns_site"]], on="venus_product_id", how="left")
        for c in ("dt_minutes", "shift_dx_m", "shift_dy_m", "shift_spread_m"):
            details[c] = details[c].astype(float)
        for c in ("n_matches", "dropped_invalid", "fit_excluded", "dropped_selection", "dropped_outlier",
                  "patches_kept"):
            details[c] = details[c].astype(int)
    else:
        details = pd.DataFrame()
    return index, details


def _patches(entries, index: pd.DataFrame) -> pd.DataFrame:
    """The per-patch table of the sites (residual misregistration), with the site of each pair."""
    tables = [pd.DataFrame(read_table(f / PATCHES_FILE, PATCH_COLUMNS, drop_partial_last_line=True))
              for f in sorted({e.folder for e in entries}) if (f / PATCHES_FILE).exists()]
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables)
    for c in RESIDUAL_COLUMNS:
        table[c] = table[c].astype(float)
    site_of = {e.pair_id: e.site for e in entries}
    table["vns_site"] = table["pair_id"].map(site_of)
    table = table[table["vns_site"].notna()].copy()
    centres = _patch_centres(entries)
    table["x"] = [centres.get((p, int(k)), (np.nan, np.nan))[0] for p, k in zip(table["pair_id"], table["patch"])]
    table["y"] = [centres.get((p, int(k)), (np.nan, np.nan))[1] for p, k in zip(table["pair_id"], table["patch"])]
    return table


def _patch_centres(entries) -> dict[tuple[str, int], tuple[float, float]]:
    """(pair id, patch) -> centre of its polygon in the GeoPackage (map coordinates)."""
    out = {}
    for e in entries:
        path = e.folder / f"{e.pair_id}_patches.gpkg"
        if path.exists():
            _, bounds = patch_geometries(path)
            out.update({(e.pair_id, k): ((left + right) / 2, (bottom + top) / 2)
                        for k, (left, bottom, right, top) in enumerate(bounds)})
    return out


def residual_table(patches: pd.DataFrame, res10: float = 10.0, res20: float = 20.0) -> pd.DataFrame:
    """Per site and band group: patches, median and 95th percentile of the residual (metres and
    low-resolution pixels)."""
    rows = []
    for site, group in patches.groupby("vns_site"):
        for name, res in (("res10", res10), ("res20", res20)):
            mag = (group[f"{name}_dx_m"] ** 2 + group[f"{name}_dy_m"] ** 2) ** 0.5
            rows.append({"site": site, "group": "10 m" if name == "res10" else "20 m", "patches": len(mag),
                         "median_m": mag.median(), "p95_m": mag.quantile(0.95), "median_px": mag.median() / res,
                         "p95_px": mag.quantile(0.95) / res})
    return pd.DataFrame(rows)


def site_counts(index: pd.DataFrame) -> list[dict]:
    """Pairs and patches per site, beside the release's patch count for the 29 SEN2VENuS sites."""
    from ..sites import PUBLISHED

    rows = []
    for site, group in index.groupby("vns_site"):
        published = PUBLISHED.get(site)
        rows.append({"site": site, "pairs": len(group), "patches": int(group["nb_patches"].sum()),
                     "published_patches": published[1] if published else None})
    return rows


def _flags(mdf: pd.DataFrame, details: pd.DataFrame, cfg: ReportConfig) -> tuple[list[str], list[str]]:
    flags = [f"{r.site} {r.band}: MAE {r.mae:.4f} > {cfg.max_mae}" for r in mdf.itertuples() if r.mae > cfg.max_mae]
    flags += [f"{r.site} {r.band}: RMSE {r.rmse:.4f} > {cfg.max_rmse}" for r in mdf.itertuples()
              if r.rmse > cfg.max_rmse]
    weak = [f"{r.pair_id}: {r.n_matches} matches, spread {r.shift_spread_m:.2f} m" for r in details.itertuples()
            if r.n_matches < cfg.weak_min_matches or r.shift_spread_m > cfg.weak_max_spread_m] if len(details) else []
    return flags, weak


def build_report(dataset: str | Path, cfg: ReportConfig | None = None, out: str | Path | None = None) -> dict:
    """Compute the metrics, draw the figures, write the HTML page. Returns the report as a dict."""
    cfg = cfg or ReportConfig()
    dataset = Path(dataset)
    out = Path(out) if out else dataset / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    entries = read_index(dataset)
    if not entries:
        raise FileNotFoundError(f"{dataset}: no index.csv with any pair")
    sites = sorted({e.site for e in entries})
    index, details = _tables(entries)
    patches = _patches(entries, index)
    if len(patches):
        residual_table(patches).to_csv(out / "residuals.tsv", sep="\t", index=False, float_format="%.4f")
    metrics, selections = {}, {}
    for site in sites:
        sel = select_patches([e for e in entries if e.site == site], cfg)
        selections[site] = [(e.pair_id, j) for e, j in sel]
        metrics[site] = site_metrics(sel)
    mdf = pd.DataFrame([{"site": s, "band": b, **m} for s, bands in metrics.items() for b, m in bands.items()])
    mdf.to_csv(out / "metrics.tsv", sep="\t", index=False)
    flags, weak = _flags(mdf, details, cfg)
    drawn = {
        "pairs_per_site": ("Pairs per site (paper Fig. 5)", lambda: F.pairs_per_site(index, sites)),
        "dates_per_site": ("Acquisition dates per site (paper Fig. 6)", lambda: F.dates_per_site(index, sites)),
        "time_deltas": ("Time deltas (paper Fig. 7)", lambda: F.time_deltas(details, sites)),
        "patches_per_site": ("Patches per site (paper Fig. 8)", lambda: F.patches_per_site(index, sites)),
        "patches_per_pair": ("Patches per pair (paper Fig. 9)", lambda: F.patches_per_pair(index, sites)),
        "mae": ("MAE per band and site (paper Fig. 10)", lambda: F.metric_table(mdf, "mae")),
        "rmse": ("RMSE per band and site (paper Fig. 11)", lambda: F.metric_table(mdf, "rmse")),
        "shifts_and_drops": ("Registration shifts and patches dropped by each rule",
                             (lambda: F.shifts_and_drops(details)) if len(details) else None),
        "residuals": ("Residual misregistration of the patches (ours: per patch, after the registration)",
                      (lambda: F.residuals(patches, sites)) if len(patches) else None),
        "residual_maps": ("Where the residual misregistration is (10 m group; arrows: its direction)",
                          (lambda: F.residual_maps(patches, sites)) if len(patches) else None),
        "sample_patches": ("Sample patches (paper Fig. 12)", lambda: F.sample_patches(entries, cfg)),
    }
    figures = {}
    for name, (title, draw) in drawn.items():
        if draw is not None:
            fig = draw()
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=90)
            figures[name] = title
    report = {"sites": sites, "metrics": metrics, "flags": flags, "weak_registrations": weak,
              "selection": selections, "figures": list(figures),
              "residuals": residual_table(patches).to_dict("records") if len(patches) else [],
              "site_counts": site_counts(index)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.html").write_text(render(report, figures, mdf, index, details))
    log.info("quality report written to %s (%d flags, %d weak registrations)", out / "report.html", len(flags),
             len(weak))
    return report
