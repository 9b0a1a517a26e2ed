"""``python -m s2v_gpu.aggregate paths.dataset=ROOT``: merge per-site outputs into one dataset index.

Writes ``ROOT/index.csv`` (every site's rows, the Table 4 columns plus ``site_folder``),
``ROOT/summary.json`` (every site's run summary), the quality report over all sites
(``ROOT/report/``), the STAC Collection over the sites' (``ROOT/stac/collection.json``) and the
dataset card (``ROOT/DATASET_CARD.md``). Sites are found as sub-folders holding an ``index.csv``;
jobs of a multirun write into their own site folders, so merging after (or while) they run never collides with them.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .layout import CARD_FILE, INDEX_COLUMNS, INDEX_FILE, MANIFEST_FILE, STAC_DIR, SUMMARY_FILE, read_index_rows
from .report import ReportConfig, build_report
from .writer import atomic_write, write_json, write_tsv

log = logging.getLogger(__name__)


def aggregate(root: str | Path, report: ReportConfig | None = None) -> dict:
    """Merge the site folders under ``root``; returns the merged summary."""
    root = Path(root)
    rows, summaries = [], {}
    for index in tqdm(sorted(root.glob(f"*/{INDEX_FILE}")), desc="aggregate: sites", unit="site",
                      disable=not sys.stderr.isatty()):
        site_rows = read_index_rows(index.parent)
        for r in site_rows:
            r["site_folder"] = index.parent.name
        rows += site_rows
        summary = index.parent / SUMMARY_FILE
        if summary.exists():
            s = json.loads(summary.read_text())
            s.pop("config", None)
            summaries[index.parent.name] = s
    if not rows:
        raise FileNotFoundError(f"{root}: no site folder with an index.csv")
    write_tsv(root / "index.csv", rows, INDEX_COLUMNS + ["site_folder"])
    merged = {"sites": sorted(summaries), "pairs": len(rows),
              "patches": sum(int(r["nb_patches"]) for r in rows), "per_site": summaries}
    write_json(root / "summary.json", merged)
    build_report(root, report)
    _catalog(root)
    log.info("merged %d sites, %d pairs, %d patches into %s", len(summaries), merged["pairs"], merged["patches"],
             root / "index.csv")
    return merged


def _catalog(root: Path) -> None:
    """The dataset's STAC Collection over the sites' (each site's written now if missing) and its card."""
    from .card import dataset_card
    from .stac import write_root_stac, write_site_stac

    for index in sorted(root.glob(f"*/{INDEX_FILE}")):
        if not (index.parent / STAC_DIR / "collection.json").exists() and (index.parent / MANIFEST_FILE).exists():
            write_site_stac(index.parent)
    write_root_stac(root)
    text = dataset_card(root)
    atomic_write(root / CARD_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def main() -> None:
    from .report.app import report_app

    report_app(lambda dataset, report, _out: aggregate(dataset, report))


if __name__ == "__main__":
    main()
