"""Building the quality report of a dataset folder: metrics, figures, page, JSON."""

from __future__ import annotations

import io
import logging
import sys
from datetime import UTC
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..dataset import patch_geometries, read_index
from ..geoquality import GROUP_RESOLUTION_M, geometric_quality
from ..layout import (
    DETAILS_FILE,
    DROP_COLUMNS,
    INDEX_FILE,
    PATCHES_FILE,
    REPORT_DIR,
    RESIDUAL_COLUMNS,
    read_patches,
    read_table,
)
from ..ownership import OwnedFolder, site_owned_folder
from . import figures as F
from .metrics import BANDS, ReportConfig, select_patches, site_metrics
from .page import DrawnFigure, render, table_html

log = logging.getLogger("s2v_gpu.report")


def _tables(entries) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The index rows and the details rows of the pairs of ``entries`` (each pair once, as the survey
    of the folders counts it; details carry their folder's ``vns_site``)."""
    site_of = {e.folder: e.site for e in entries}
    pairs_of = {f: {e.pair_id for e in entries if e.folder == f} for f in site_of}
    index = [pd.read_csv(f / INDEX_FILE, sep="\t") for f in sorted(site_of)]
    index = pd.concat([t[t["patches_gpkg"].str.removesuffix("_patches.gpkg").isin(pairs_of[f])]
                       for f, t in zip(sorted(site_of), index)])
    details = [pd.DataFrame(read_table(f / DETAILS_FILE, ["pair_id"])).assign(vns_site=site)
               for f, site in sorted(site_of.items()) if (f / DETAILS_FILE).exists()]
    details = [d[d["pair_id"].isin(pairs_of[f])] for f, d in zip(sorted(f for f in site_of
                                                                          if (f / DETAILS_FILE).exists()), details)]
    details = pd.concat(details) if details else pd.DataFrame()
    if not (len(details) and "venus_product_id" in details):
        return index, pd.DataFrame()
    for c in ("dt_minutes", "shift_dx_m", "shift_dy_m", "shift_spread_m"):
        details[c] = details[c].astype(float)
    for c in ("n_matches", "fit_excluded", "patches_total", "patches_kept", *DROP_COLUMNS):
        # a column added after a folder was made (dropped_local) reads as 0 in its older rows
        details[c] = pd.to_numeric(details.get(c, 0), errors="coerce").fillna(0).astype(int)
    return index, details


def _patches(entries, index: pd.DataFrame) -> pd.DataFrame:
    """The per-patch table of the sites (residual misregistration): the rows of the indexed pairs of
    each site folder, with the site and the patch centre (map coordinates, from the GeoPackage)."""
    tables = []
    for folder in sorted({e.folder for e in entries}):
        pairs = {e.pair_id: e for e in entries if e.folder == folder}
        if not (folder / PATCHES_FILE).exists():
            continue
        table = pd.DataFrame(read_patches(folder)[0])
        if not len(table):
            continue
        table = table[table["pair_id"].isin(pairs)].copy()
        table["vns_site"] = table["pair_id"].map(lambda p: pairs[p].site)
        centres = {pid: _patch_centres(e) for pid, e in pairs.items()}
        xy = [centres[p][int(k)] if int(k) < len(centres[p]) else (np.nan, np.nan)
              for p, k in zip(table["pair_id"], table["patch"])]
        table["x"], table["y"] = [c[0] for c in xy], [c[1] for c in xy]
        tables.append(table)
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables)
    for c in RESIDUAL_COLUMNS:
        table[c] = table[c].astype(float)
    return table


def _patch_centres(entry) -> list[tuple[float, float]]:
    """Centre of each patch polygon of a pair's GeoPackage (map coordinates), in patch order."""
    path = entry.folder / entry.files["patches_gpkg"]
    if not path.exists():
        return []
    _, bounds = patch_geometries(path)
    return [((left + right) / 2, (bottom + top) / 2) for left, bottom, right, top in bounds]


def residual_table(patches: pd.DataFrame) -> pd.DataFrame:
    """Per site and band group, the geometric quality of the kept patches in KARIOS's and ESA's terms
    (:func:`s2v_gpu.geoquality.geometric_quality`: mean and standard deviation along x and y, RMSE, CE90
    and CE95 in metres and low-resolution pixels, over the converged measurements), and the median."""
    rows = []
    for site, group in patches.groupby("vns_site"):
        for name, res in GROUP_RESOLUTION_M.items():
            ok = group[f"{name}_converged"].astype(float) > 0
            dx, dy = group.loc[ok, f"{name}_dx_m"].astype(float), group.loc[ok, f"{name}_dy_m"].astype(float)
            stats = geometric_quality(dx.to_numpy(), dy.to_numpy(), res)
            median = float(np.median(np.hypot(dx, dy))) if len(dx) else float("nan")
            rows.append({"site": site, "group": f"{res:g} m", **stats, "median_m": median})
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
    # a phase-correlation seed counts agreeing tiles, not SIFT matches: only its spread is judged
    weak = [f"{r.pair_id}: {r.n_matches} {'tiles' if 'phase' in r.registration_mode else 'matches'}, spread "
            f"{r.shift_spread_m:.2f} m" for r in details.itertuples()
            if (r.n_matches < cfg.weak_min_matches and "phase" not in r.registration_mode)
            or r.shift_spread_m > cfg.weak_max_spread_m] if len(details) else []
    return flags, weak


def _provenance(entries, index: pd.DataFrame) -> dict:
    """What made the dataset (each site folder's manifest) and this report."""
    from datetime import datetime

    from ..provenance import read_manifest, software_line, software_versions

    software, hashes, methods, layouts = set(), set(), {}, set()
    for folder in sorted({e.folder for e in entries}):
        manifest = read_manifest(folder)
        if manifest:
            software.add(software_line(manifest.get("software", {})))
            hashes.add(str(manifest.get("config_hash")))
            methods[str(manifest.get("config_hash"))] = manifest.get("method")
            layouts.add(str(manifest.get("layout")))
    return {"generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "report_software": software_line(software_versions()), "dataset_software": sorted(software),
            "config_hashes": sorted(hashes), "methods": methods, "layouts": sorted(layouts),
            "venus_products": int(index["venus_product_id"].nunique()),
            "s2_products": int(index["sentinel2_product_id"].nunique())}


def _pairs_table(index: pd.DataFrame, details: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: the index's products and counts beside the details' registration and drops."""
    keep = ["vns_site", "date", "s2_tile", "venus_product_id", "sentinel2_product_id", "nb_patches"]
    pairs = index[keep]
    if len(details):
        cols = [c for c in details.columns if c not in ("w_10m", "w_20m", "timings", "software", "vns_site",
                                                        "config_hash")]
        pairs = pairs.merge(details[[*cols, "vns_site"]], on=["vns_site", "venus_product_id"], how="left")
        pairs = pairs[["pair_id", *[c for c in pairs.columns if c != "pair_id"]]]
    return pairs.sort_values(["vns_site", "date"]).reset_index(drop=True)


def _site_tables(report: dict, mdf: pd.DataFrame) -> dict[str, str]:
    counts = pd.DataFrame(report["site_counts"])
    counts["published_patches"] = pd.to_numeric(counts["published_patches"])
    out = {"Pairs and patches per site": table_html(
        counts, "pairs and patches written per site; published_patches: the SEN2VENµS release's count "
        "(— for a site outside the 29; the paper gives 579 pairs in all, not per site)", "%.0f")}
    for metric in ("mae", "rmse"):
        table = mdf.pivot(index="site", columns="band", values=metric).reindex(columns=BANDS).reset_index()
        table.columns.name = None
        out[f"{metric.upper()} per site and band"] = table_html(
            table, f"{metric.upper()} between Sentinel-2 and VENµS MTF-downsampled to the Sentinel-2 resolution "
            "(reflectance, paper section 3.1)")
    if report.get("residuals"):
        out["Geometric quality per site (KARIOS / ESA terms)"] = table_html(
            pd.DataFrame(report["residuals"]), "residual misregistration of the kept patches after the "
            "registration (converged measurements, n): mean and standard deviation along x (east) and y (north), "
            "RMSE of the vector, CE90 and CE95 (radii holding 90 % and 95 % of the vectors) in metres (_m) and "
            "low-resolution pixels (_px: 10 m or 20 m), median", "%.3f")
    return out


def _draw(index, details, patches, mdf, entries, sites, cfg) -> list[DrawnFigure]:
    """The figures (PNG at ``cfg.dpi``), skipping those without data."""
    d, p = len(details) > 0, len(patches) > 0
    specs = [
        ("pairs_per_site", "Pairs per site (paper Fig. 5)", "Same-day pairs written per site.",
         lambda: F.pairs_per_site(index, sites)),
        ("dates_per_site", "Acquisition dates per site (paper Fig. 6)", "One mark per pair, at its date.",
         lambda: F.dates_per_site(index, sites)),
        ("time_deltas", "Time deltas (paper Fig. 7)", "Sentinel-2 minus VENµS acquisition time (minutes), "
         "distribution over the pairs of each site.", (lambda: F.time_deltas(details, sites)) if d else None),
        ("patches_per_site", "Patches per site (paper Fig. 8)", "Patches written per site (bars) and the "
         "SEN2VENµS release's count for its 29 sites (diamonds).", lambda: F.patches_per_site(index, sites)),
        ("patches_per_pair", "Patches per pair (paper Fig. 9)", "Distribution of the patches kept per pair.",
         lambda: F.patches_per_pair(index, sites)),
        ("mae", "MAE per band and site (paper Fig. 10)", "Reflectance units.", lambda: F.metric_table(mdf, "mae")),
        ("rmse", "RMSE per band and site (paper Fig. 11)", "Reflectance units.",
         lambda: F.metric_table(mdf, "rmse")),
        ("shifts", "Registration shifts", "Global shift of each pair (metres, equal axes), coloured by the "
         "number of matches; dashed: the paper's 15 m window.", (lambda: F.shifts(details)) if d else None),
        ("drops", "Patches by rule", "Patches of the common grids per site by the rule that dropped them "
         "(invalid pixels, the random draw, the local model, outliers, the residual filter), or kept: the bars "
         "add up to the grid.", (lambda: F.drops(details, sites)) if d else None),
        ("geometric_quality", "Geometric quality: CE90 and CE95 per site", "Radii holding 90 % (bars) and 95 % "
         "(marks) of the kept patches' residual vectors, in low-resolution pixels, 10 m and 20 m groups; dashed: "
         "0.3 px, ESA's Sentinel-2 multi-temporal registration requirement (at 95 %).",
         (lambda: F.geometric_quality(residual_table(patches), sites)) if p else None),
        ("residuals", "Residual misregistration of the patches", "|residual| per patch after the registration "
         "(ours, per patch), 10 m and 20 m groups, metres.", (lambda: F.residuals(patches, sites)) if p else None),
        ("residual_maps", "Where the residual misregistration is", "Patch centres coloured by the 10 m group's "
         "|residual| (m), arrows its direction (exaggerated); the first 12 sites.",
         (lambda: F.residual_maps(patches, sites)) if p else None),
        ("sample_patches", "Sample patches (paper Fig. 12)", "RGB and colour-mapped NIR, VENµS 5 m beside "
         "Sentinel-2 10 m / 20 m, same colour scale.", lambda: F.sample_patches(entries, cfg)),
    ]
    drawn = []
    for name, title, caption, draw in specs:
        if draw is not None:
            fig = draw()
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=cfg.dpi, pil_kwargs={"compress_level": 1})
            drawn.append(DrawnFigure(name, title, caption, buf.getvalue()))
    return drawn


def build_report(dataset: str | Path, cfg: ReportConfig | None = None, out: str | Path | None = None) -> dict:
    """Compute the metrics, draw the figures, write the self-contained HTML page, the tables and JSON.
    Returns the report as a dict."""
    cfg = cfg or ReportConfig()
    dataset = Path(dataset)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        out = OwnedFolder(Path(out))
    else:  # inside the dataset: a real folder of ours, never a planted link
        out = site_owned_folder(dataset, REPORT_DIR)
    entries = read_index(dataset)
    if not entries:
        raise FileNotFoundError(f"{dataset}: no index.csv with any pair")
    sites = sorted({e.site for e in entries})
    index, details = _tables(entries)
    patches = _patches(entries, index)
    metrics, selections = {}, {}
    for site in tqdm(sites, desc="report: metrics per site", unit="site",
                     disable=len(sites) < 3 or not sys.stderr.isatty()):
        sel = select_patches([e for e in entries if e.site == site], cfg)
        selections[site] = [(e.pair_id, j) for e, j in sel]
        metrics[site] = site_metrics(sel)
    mdf = pd.DataFrame([{"site": s, "band": b, **m} for s, bands in metrics.items() for b, m in bands.items()])
    flags, weak = _flags(mdf, details, cfg)
    figures = _draw(index, details, patches, mdf, entries, sites, cfg)
    report = {"sites": sites, "metrics": metrics, "flags": flags, "weak_registrations": weak,
              "selection": selections, "figures": [f.name for f in figures],
              "residuals": residual_table(patches).to_dict("records") if len(patches) else [],
              "site_counts": site_counts(index)}
    pairs = _pairs_table(index, details)
    page = render(report, figures, _site_tables(report, mdf), pairs, _provenance(entries, index),
                  cfg.dpi)
    _write_outputs(out, report, page, figures, mdf, pairs, residual_table(patches) if len(patches) else None)
    log.info("quality report written to %s (%d flags, %d weak registrations)", out.folder / "report.html", len(flags),
             len(weak))
    return report


def _write_outputs(owned: OwnedFolder, report: dict, page: str, figures: list[DrawnFigure], mdf: pd.DataFrame,
                   pairs: pd.DataFrame, residuals: pd.DataFrame | None) -> None:
    """The report folder: the page, its JSON and tables, and each figure as a PNG file too (for papers).
    Every name is claimed first: a file in the way that is not ours refuses the report before any write."""
    from ..writer import atomic_write, write_json, write_tsv

    tables = {"metrics.tsv": mdf, "pairs.tsv": pairs, "residuals.tsv": residuals}
    tables = {name: frame for name, frame in tables.items() if frame is not None}
    owned.claim([f"{f.name}.png" for f in figures] + list(tables) + ["report.json", "report.html"])
    out = owned.folder
    for f in figures:
        atomic_write(out / f"{f.name}.png", lambda tmp, b=f.png: tmp.write_bytes(b))
    for name, frame in tables.items():
        write_tsv(out / name, frame.round(6).to_dict("records"), list(frame.columns))
    write_json(out / "report.json", report)
    atomic_write(out / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
