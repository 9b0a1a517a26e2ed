"""The report's HTML page: one self-contained file (figures embedded as PNG data), readable from 1 to
100+ sites: per-site tables and figures have a row per site; per-pair tables are folded and linked
as TSV beside the page."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass

import pandas as pd

esc = html.escape

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto}figcaption{font-size:13px;color:#444}
.flag{color:#b00}details{margin:0.6em 0}summary{cursor:pointer;font-weight:600}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{font-weight:600}
pre{font-size:11px;background:#f7f7f7;padding:6px;overflow-x:auto}.scroll{max-height:480px;overflow:auto}
"""


@dataclass
class DrawnFigure:
    """A figure of the page: its PNG bytes, title and caption (what is shown, units, how to read it)."""

    name: str
    title: str
    caption: str
    png: bytes


def figure_html(f: DrawnFigure, dpi: int) -> str:
    """The figure shown at its size in inches (CSS px are 1/96 in), its pixels at ``dpi`` kept for zooming
    and printing."""
    data = base64.b64encode(f.png).decode("ascii")
    width = round(int.from_bytes(f.png[16:20], "big") * 96 / dpi)  # the PNG header's width
    return (f"<figure id='{esc(f.name)}'><h3>{esc(f.title)}</h3><img src='data:image/png;base64,{data}' "
            f"width='{width}' alt='{esc(f.title)}'><figcaption>{esc(f.caption)}</figcaption></figure>")


def table_html(df: pd.DataFrame, caption: str, float_format: str = "%.4f") -> str:
    """A table with its caption (units in the caption or the column names)."""
    body = df.to_html(index=False, na_rep="—", float_format=lambda v: float_format % v, border=0)
    return body.replace("<thead>", f"<caption>{esc(caption)}</caption><thead>", 1)


def folded(summary: str, inner: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary><div class='scroll'>{inner}</div>" \
           "</details>"


def provenance_html(prov: dict) -> str:
    """When, with what software and which configuration(s) the dataset and this report were made."""
    rows = [("report generated", prov["generated"]), ("report software", prov["report_software"]),
            ("dataset software", "; ".join(prov["dataset_software"]) or "—"),
            ("configuration hash(es)", ", ".join(prov["config_hashes"]) or "—"),
            ("products", f"{prov['venus_products']} VENµS and {prov['s2_products']} Sentinel-2 L2A products "
                         "(Theia / CNES, MAJA); see the per-pair table"),
            ("layout", ", ".join(prov["layouts"]) or "—")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in rows)
    method = folded("method configuration (as recorded in each site's manifest.json)",
                    f"<pre>{esc(json.dumps(prov['methods'], indent=1, sort_keys=True))}</pre>")
    return f"<h2>Provenance</h2><dl class='prov'>{dl}</dl>{method}"


def render(report: dict, figures: list[DrawnFigure], tables: dict[str, str], pairs: pd.DataFrame,
           provenance: dict, dpi: int) -> str:
    """The whole page: summary, provenance, flags, per-site tables, figures, the per-pair table (folded)."""
    n_pairs, n_patches = len(pairs), int(pairs["nb_patches"].sum()) if len(pairs) else 0
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width,initial-scale=1'>",
             f"<title>s2v_gpu quality report — {len(report['sites'])} site(s)</title><style>{_STYLE}</style>",
             "</head><body><h1>Quality report</h1>",
             f"<p><b>{n_pairs}</b> pairs, <b>{n_patches}</b> patches, <b>{len(report['sites'])}</b> site(s). "
             "Reflectances are surface reflectances (FRE/SRE ×10000 in the tensors, shown here as fractions).</p>",
             provenance_html(provenance), "<h2>Flags</h2><ul>"]
    items = report["flags"] + [f"weak registration: {w}" for w in report["weak_registrations"]]
    parts += [f"<li class='flag'>{esc(f)}</li>" for f in items] or ["<li>none</li>"]
    parts.append("</ul><h2>Per site</h2>")
    parts += [folded(title, body, open_=len(report["sites"]) <= 30) for title, body in tables.items()]
    parts.append("<h2>Figures</h2><p>" + " · ".join(f"<a href='#{esc(f.name)}'>{esc(f.title)}</a>"
                                                      for f in figures) + "</p>")
    parts += [figure_html(f, dpi) for f in figures]
    parts.append("<h2>Per pair</h2><p>Also in <a href='pairs.tsv'>pairs.tsv</a> beside this page.</p>")
    parts.append(folded(f"all {n_pairs} pairs: products, registration, patches dropped by each rule",
                        table_html(pairs, "one row per pair (shifts in metres, Δt in minutes)", "%.3f")))
    parts.append("</body></html>")
    return "\n".join(parts)
