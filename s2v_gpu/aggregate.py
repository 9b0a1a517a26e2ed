"""``python -m s2v_gpu.aggregate paths.dataset=ROOT``: merge per-site outputs into one dataset index.

Writes ``ROOT/index.csv`` (every site's rows, the Table 4 columns plus ``site_folder``),
``ROOT/summary.json`` (every site's run summary, and the folders left out), the quality report over all
sites (``ROOT/report/``), the STAC Collection over the sites' (``ROOT/stac/collection.json``) and the
dataset card (``ROOT/DATASET_CARD.md``).

Which folders count (:func:`s2v_gpu.survey.survey_sites` with ``require_manifest``): sub-folders with
our ``manifest.json`` whose recorded site is their name. Every other folder is named in a warning with
the reason and never touched: a folder of someone else's (no manifest), an empty one, a symbolic link,
a backup copy or a renamed site folder (its manifest records another site), a folder whose tables are
not ours. A pair is counted once. A site folder that a running job holds is merged with the pairs
complete at that moment (the index is written last and atomically), and the warning says so.

Exit status: 0 when at least one site was merged, 1 when no site folder is found (the folders left
out are named), 2 for a configuration error or a file in the way of one the aggregate writes that it
did not write (named; nothing else is written).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .layout import CARD_FILE, INDEX_COLUMNS, INDEX_FILE, STAC_DIR, SUMMARY_FILE
from .ownership import OwnedFolder
from .report import ReportConfig, build_report
from .survey import survey_sites
from .writer import atomic_write, write_json, write_tsv

__all__ = ["aggregate", "main"]

log = logging.getLogger(__name__)

#: what the aggregate writes at the root, beside its report/ and stac/ folders
ROOT_FILES = [INDEX_FILE, SUMMARY_FILE, CARD_FILE]


def aggregate(root: str | Path, report: ReportConfig | None = None) -> dict:
    """Merge the site folders under ``root``; returns the merged summary.

    Raises:
        FileNotFoundError: no site folder of ours under ``root``.
        ForeignFileError: a file the aggregate writes is there and it did not write it.
    """
    root = Path(root)
    survey = survey_sites(root, require_manifest=True, check_busy=True)
    if not any(survey.rows.values()):
        left = "; ".join(f"{x.path.name}: {x.reason}" for x in survey.left_out)
        raise FileNotFoundError(f"{root}: no site folder of s2v_gpu with a pair" + (f" (left out: {left})" if left
                                                                                   else ""))
    owned = OwnedFolder(root)
    owned.claim(ROOT_FILES)  # before any write: a file of someone else's there stops the aggregate whole
    rows, summaries = [], {}
    for folder, site_rows in survey.rows.items():
        rows += [{**r, "site_folder": folder.name} for r in site_rows]
        summaries[folder.name] = _site_summary(folder)
    write_tsv(root / INDEX_FILE, rows, INDEX_COLUMNS + ["site_folder"])
    merged = {"sites": sorted(summaries), "pairs": len(rows),
              "patches": sum(int(r["nb_patches"]) for r in rows), "per_site": summaries,
              "left_out": [{"path": str(x.path), "reason": x.reason} for x in survey.left_out],
              "being_written": [str(p) for p in survey.busy]}
    write_json(root / SUMMARY_FILE, merged)
    build_report(root, report)
    _catalog(root, list(survey.rows), owned)
    log.info("merged %d sites, %d pairs, %d patches into %s (%d folders or pairs left out)", len(summaries),
             merged["pairs"], merged["patches"], root / INDEX_FILE, len(survey.left_out))
    return merged


def _site_summary(folder: Path) -> dict:
    """A site's last run summary without its configuration ({} where it is missing or unreadable)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(summary, dict):
        summary.pop("config", None)
        return summary
    return {}


def _catalog(root: Path, folders: list[Path], owned: OwnedFolder) -> None:
    """The dataset's STAC Collection over the sites' (each site's written now if missing) and its card."""
    from .card import dataset_card
    from .stac import write_root_stac, write_site_stac

    for folder in folders:
        if not (folder / STAC_DIR / "collection.json").exists():
            write_site_stac(folder)
    write_root_stac(root, folders)
    text = dataset_card(root)
    atomic_write(owned.folder / CARD_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def main() -> None:
    from .report.app import report_app

    report_app(lambda dataset, report, _out: aggregate(dataset, report))


if __name__ == "__main__":
    main()
