"""The report's HTML page."""

from __future__ import annotations

import html

import pandas as pd


def render(report: dict, figures: dict[str, str], mdf: pd.DataFrame, index: pd.DataFrame,
           details: pd.DataFrame) -> str:
    """One page: counts, flags, the metric tables, the figures (``name.png`` beside the page), the pairs."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>s2v_gpu quality report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}.flag{color:#b00}</style></head><body>",
             "<h1>Quality report</h1>",
             f"<p>{len(index)} pairs, {int(index['nb_patches'].sum())} patches, sites: "
             f"{esc(', '.join(report['sites']))}</p>", "<h2>Flags</h2><ul>"]
    items = report["flags"] + [f"weak registration: {w}" for w in report["weak_registrations"]]
    parts += [f"<li class='flag'>{esc(f)}</li>" for f in items] or ["<li>none</li>"]
    parts.append("</ul><h2>Pairs and patches per site (the SEN2VENµS release's patch count beside)</h2>")
    parts.append(pd.DataFrame(report["site_counts"]).to_html(index=False, na_rep="—"))
    parts.append("<h2>MAE and RMSE per site and band</h2>")
    parts.append(mdf.pivot(index="site", columns="band", values="mae").to_html(float_format="%.4f"))
    parts.append(mdf.pivot(index="site", columns="band", values="rmse").to_html(float_format="%.4f"))
    if report.get("residuals"):
        parts.append("<h2>Residual misregistration per site (metres and low-resolution pixels)</h2>")
        parts.append(pd.DataFrame(report["residuals"]).to_html(index=False, float_format="%.3f"))
    for name, title in figures.items():
        parts.append(f"<h2>{esc(title)}</h2><img src='{name}.png' alt='{esc(title)}'>")
    parts.append("<h2>Pairs</h2>")
    parts.append(index.to_html(index=False))
    if len(details):
        parts.append("<h2>Registration and drops per pair</h2>")
        parts.append(details.drop(columns=["w_10m", "w_20m", "timings", "software", "vns_site"],
                                  errors="ignore").to_html(index=False))
    parts.append("</body></html>")
    return "\n".join(parts)
