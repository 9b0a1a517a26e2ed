"""Compare two dataset folders tensor by tensor: how many int16 values differ, and by how much.

    python scripts/compare_datasets.py DATASET_A DATASET_B [--json out.json]

For the determinism promise across CPUs and thread counts (docs: byte-identical on the same machine,
software and configuration; elsewhere a few values 1 DN apart): it reads both folders'
``index.csv`` through the same survey as the Dataset, pairs the rows by pair id, and reports for each
tensor column the values compared, the values that differ and the largest difference in DN, plus
whether ``index.csv`` and ``patches.tsv`` are byte-identical. Exit status 0 when the pair ids and
tensor shapes match, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from s2v_gpu.layout import INDEX_FILE, PATCHES_FILE, TENSOR_COLUMNS, pair_id_of_row
from s2v_gpu.survey import survey_sites


def _rows(root: Path) -> dict[str, tuple[Path, dict]]:
    return {pair_id_of_row(r): (folder, r) for folder, rows in survey_sites(root).rows.items() for r in rows}


def compare(a: Path, b: Path) -> dict:
    """Per tensor column: values compared, values that differ, largest |difference| in DN."""
    rows_a, rows_b = _rows(a), _rows(b)
    out = {"pairs_a": len(rows_a), "pairs_b": len(rows_b), "same_pairs": sorted(rows_a) == sorted(rows_b),
           "columns": {}, "shape_mismatch": []}
    for column in TENSOR_COLUMNS:
        total = differ = worst = 0
        for pid in sorted(set(rows_a) & set(rows_b)):
            (fa, ra), (fb, rb) = rows_a[pid], rows_b[pid]
            ta = torch.load(fa / ra[column], weights_only=True)
            tb = torch.load(fb / rb[column], weights_only=True)
            if ta.shape != tb.shape:
                out["shape_mismatch"].append(f"{pid} {column}: {tuple(ta.shape)} vs {tuple(tb.shape)}")
                continue
            d = (ta.int() - tb.int()).abs()
            total, differ = total + d.numel(), differ + int((d > 0).sum())
            worst = max(worst, int(d.max()) if d.numel() else 0)
        out["columns"][column] = {"values": total, "differ": differ, "max_dn": worst}
    for name in (INDEX_FILE, PATCHES_FILE):
        files_a = sorted(f / name for f in survey_sites(a).rows)
        files_b = sorted(f / name for f in survey_sites(b).rows)
        out[f"{name}_identical"] = [p.read_bytes() for p in files_a] == [p.read_bytes() for p in files_b]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = compare(args.a, args.b)
    for column, c in result["columns"].items():
        print(f"{column:<22} {c['differ']:>8} of {c['values']:>10} values differ, at most {c['max_dn']} DN")
    print(f"pairs: {result['pairs_a']} and {result['pairs_b']} (same ids: {result['same_pairs']}); "
          f"index.csv identical: {result['index.csv_identical']}, patches.tsv: {result['patches.tsv_identical']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["same_pairs"] and not result["shape_mismatch"] else 1


if __name__ == "__main__":
    sys.exit(main())
