"""The dataset card (Markdown) of a site folder or of a dataset root: what is in it, where it comes
from, under which licence, how it was made and where that departs from the SEN2VENuS paper, as read
from the folders' ``index.csv`` and ``manifest.json`` (nothing is assumed about the configuration)."""

from __future__ import annotations

from pathlib import Path

from . import __version__
from .layout import read_table
from .licences import card_lines
from .provenance import read_manifest, software_line
from .sites import PUBLISHED
from .split import SPLIT_COLUMNS, SPLIT_FILE, SPLITS
from .survey import survey_sites

CITATION = ("Michel, J.; Vinasco-Salinas, J.; Inglada, J.; Hagolle, O. SEN2VENµS, a Dataset for the Training "
            "of Sentinel-2 Super-Resolution Algorithms. Data 2022, 7, 96. https://doi.org/10.3390/data7070096")


def departures(method: dict) -> list[str]:
    """The choices of a recorded method configuration that are not the paper's, in words."""
    pipe = method.get("pipeline", {})
    reg, sel = pipe.get("registration", {}), pipe.get("selection", {})
    out = []
    if reg.get("mode") != "paper":
        out.append("registration: SIFT seed on the most valid tiles, refined by robust Gauss-Newton on the whole "
                   "overlap (the paper: plain mean of the SIFT matches)")
    if reg.get("model") == "local":
        out.append("registration model `local`: a smooth displacement field instead of one global translation")
    if pipe.get("shift_kernel") not in (None, "keys"):
        out.append(f"Sentinel-2 resampled with the `{pipe.get('shift_kernel')}` kernel (the paper: bicubic)")
    if float(sel.get("max_residual_m") or 0) > 0:
        out.append(f"patches whose measured residual misregistration exceeds {sel['max_residual_m']} m dropped")
    out.append("per-patch residual misregistration measured and recorded (patches.tsv, GeoPackage attributes)")
    return out


def _sites(site_rows: dict[Path, list[dict]]) -> tuple[list[tuple[str, int, int]], dict]:
    rows, manifests = [], {}
    for folder, index in site_rows.items():
        if index:
            rows.append((index[0]["vns_site"], len(index), sum(int(r["nb_patches"]) for r in index)))
        manifest = read_manifest(folder)
        if manifest:
            manifests[folder.name] = manifest
    return rows, manifests


def _split_lines(root: Path) -> list[str]:
    """The card's split section, from ``ROOT/split.csv`` when a split was written."""
    path = Path(root) / SPLIT_FILE
    if not path.exists():
        return []
    rows = read_table(path, SPLIT_COLUMNS)
    lines = ["## Split", "", f"`{SPLIT_FILE}` (written by `s2v-gpu-split`, seeded and deterministic) puts each pair "
             "on one side; by site unless it says otherwise (`Sen2VenusDataset(root, split='train')`):", "",
             "| split | sites | pairs | patches |", "|---|---|---|---|"]
    for name in SPLITS:
        part = [r for r in rows if r["split"] == name]
        lines.append(f"| {name} | {len({r['vns_site'] for r in part})} | {len(part)} | "
                     f"{sum(int(r['nb_patches']) for r in part)} |")
    shared = {r["vns_site"] for r in rows if r["split"] == "train"} & {r["vns_site"] for r in rows
                                                                       if r["split"] != "train"}
    if shared:
        lines += ["", f"**Sites on both sides** ({', '.join(sorted(shared))}): a split by pair; test scores are "
                  "optimistic (correlated patches of one site)."]
    return lines + [""]


def dataset_card(root: Path) -> str:
    """The card of ``root``: a site folder, or a folder of site folders."""
    root = Path(root)
    sites, manifests = _sites(survey_sites(root).rows)
    methods = {m.get("config_hash"): m for m in manifests.values()}
    sizes = sorted({(m.get("method") or {}).get("pipeline", {}).get("patches", {}).get("size_5m", 256)
                    for m in manifests.values()}) or [256]
    size = "/".join(str(s) for s in sizes)
    lines = [f"# Dataset card: {root.resolve().name}", "",
             f"Sentinel-2 L2A patches at 10 m (B2 B3 B4 B8) and 20 m (B5 B6 B7 B8A), each paired with a VENµS L2A "
             f"patch at 5 m ({size} px) acquired the same day, registered and radiometrically harmonised, built "
             f"with s2v_gpu {__version__} after SEN2VENµS.", "",
             "## Contents", "", "| site | pairs | patches | SEN2VENµS release patches |", "|---|---|---|---|"]
    lines += [f"| {s} | {p} | {n} | {PUBLISHED[s][1] if s in PUBLISHED else '—'} |" for s, p, n in sites]
    lines += [f"| **all** | **{sum(s[1] for s in sites)}** | **{sum(s[2] for s in sites)}** | |", "",
              "## Sources, licences and attribution", "",
              "Derived from Theia L2A surface reflectance products of VENµS and Sentinel-2 (processed by CNES with "
              "MAJA, distributed by the Theia land data centre, https://theia.cnes.fr). The products of each pair "
              "are named in `index.csv` (`venus_product_id`, `sentinel2_product_id`) and in the STAC Items "
              "(`stac/`).", "", *card_lines(),
              "", "## Method", "", "The SEN2VENµS method (paper section 2): same-day pairs (|Δt| ≤ 30 min), "
              "common grid, registration of Sentinel-2 on VENµS, MTF-matched downsampling, per-group linear "
              "radiometric fit, patch selection. Departures from the paper in this dataset:", ""]
    for h, m in sorted(methods.items(), key=lambda kv: str(kv[0])):
        lines.append(f"Configuration `{h}` (recorded in `manifest.json`):")
        lines += [f"- {d}" for d in departures(m.get("method") or {})]
        lines.append("")
    lines += _split_lines(root)
    software = sorted({software_line(m.get("software", {})) for m in manifests.values()})
    lines += ["## Provenance", "", *[f"- software: `{s}`" for s in software], "",
              "## Use", "", "```python", "from s2v_gpu.dataset import Sen2VenusDataset",
              f"ds = Sen2VenusDataset({str(root.resolve().name)!r}, groups=('10m', '20m'))", "```", "",
              "## Citation", "", CITATION, ""]
    return "\n".join(lines)
