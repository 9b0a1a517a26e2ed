"""The report's figures (the paper's section 3): each function returns a matplotlib Figure."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..layout import SCALE
from .metrics import BANDS, ReportConfig, load


def _figure(w: float, h: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h))
    return fig, fig.add_subplot()


def _site_height(n_sites: int) -> float:
    """Figure height (inches) for one row per site: labels never overlap, from 1 to 100+ sites."""
    return 1.2 + 0.24 * max(1, n_sites)


def _per_site_axes(sites: list[str], width: float = 7.0) -> tuple[Figure, object]:
    fig, ax = _figure(width, _site_height(len(sites)))
    ax.set_yticks(range(len(sites)), sites, fontsize=8 if len(sites) < 40 else 6)
    ax.set_ylim(len(sites) - 0.5, -0.5)  # first site on top, as in a table
    ax.grid(axis="x", alpha=0.3)
    return fig, ax


def pairs_per_site(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 5, one bar per site (horizontal, so 100 sites stay readable)."""
    fig, ax = _per_site_axes(sites)
    ax.barh(range(len(sites)), index.groupby("vns_site").size().reindex(sites).fillna(0), color="tab:blue")
    ax.set_xlabel("pairs")
    return fig


def dates_per_site(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 6: one row of acquisition dates per site."""
    fig, ax = _per_site_axes(sites, 8)
    for k, s in enumerate(sites):
        dates = pd.to_datetime(index.loc[index["vns_site"] == s, "date"])
        ax.plot(dates, [k] * len(dates), "|", ms=8, mew=1.5, color="tab:blue")
    ax.set_xlabel("acquisition date")
    return fig


def _boxes(ax, values: list, sites: list[str]) -> None:
    """One horizontal box per site (empty sites left blank)."""
    data = [np.asarray(v, dtype=float) for v in values]
    keep = [k for k, v in enumerate(data) if len(v)]
    if keep:
        ax.boxplot([data[k] for k in keep], positions=keep, orientation="horizontal", widths=0.6, flierprops={"ms": 2})
    ax.set_yticks(range(len(sites)), sites)


def time_deltas(details: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 7 (``details`` carries the site of each pair in ``vns_site``)."""
    fig, ax = _per_site_axes(sites)
    if len(details):
        _boxes(ax, [details.loc[details["vns_site"] == s, "dt_minutes"] for s in sites], sites)
    ax.set_xlabel("Δt Sentinel-2 − VENµS (minutes)")
    return fig


def patches_per_site(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 8, with the SEN2VENµS release's count marked for its 29 sites."""
    from ..sites import PUBLISHED

    fig, ax = _per_site_axes(sites)
    ax.barh(range(len(sites)), index.groupby("vns_site")["nb_patches"].sum().reindex(sites).fillna(0),
            color="tab:green", label="this dataset")
    published = [(k, PUBLISHED[s][1]) for k, s in enumerate(sites) if s in PUBLISHED]
    if published:
        ax.plot([p for _, p in published], [k for k, _ in published], "kD", ms=4, label="SEN2VENµS release")
        ax.set_xscale("log")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("patches")
    return fig


def patches_per_pair(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 9: the distribution of patches per pair, one box per site."""
    fig, ax = _per_site_axes(sites)
    _boxes(ax, [index.loc[index["vns_site"] == s, "nb_patches"] for s in sites], sites)
    ax.set_xlabel("patches per pair")
    return fig


def metric_table(mdf: pd.DataFrame, metric: str) -> Figure:
    """Paper Figs. 10 (MAE) and 11 (RMSE): per band and site, reflectance units."""
    table = mdf.pivot(index="site", columns="band", values=metric).reindex(columns=BANDS)
    fig, ax = _figure(7.5, 1.0 + 0.3 * len(table.index))
    im = ax.imshow(table.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(BANDS)), BANDS)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=8 if len(table.index) < 40 else 6)
    for (i, j), v in np.ndenumerate(table.values):
        ax.text(j, i, f"{v:.4f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label=metric.upper())
    return fig


def shifts(details: pd.DataFrame, window_m: float = 15.0) -> Figure:
    """The registration shift of every pair (equal axes), coloured by its number of matches, with the
    paper's 15 m window drawn."""
    from matplotlib.patches import Circle

    fig, ax = _figure(5.5, 4.8)
    sc = ax.scatter(details["shift_dx_m"], details["shift_dy_m"], c=details["n_matches"], cmap="plasma", s=12)
    fig.colorbar(sc, ax=ax, label="matches")
    ax.add_patch(Circle((0, 0), window_m, fill=False, ls="--", color="grey"))
    lim = max(window_m * 1.1, float(np.nanmax(np.abs(details[["shift_dx_m", "shift_dy_m"]].to_numpy()))) * 1.1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("shift east (m)")
    ax.set_ylabel("shift north (m)")
    return fig


#: every rule that drops a grid patch, in the order they act, then the kept ones: the bars add up to
#: the patches of the common grid (``fit_excluded`` is not a drop: those patches stay candidates)
DROP_RULES = {"dropped_invalid": "invalid pixels", "dropped_selection": "selection (random draw)",
              "dropped_local": "local model (field unusable)", "dropped_outlier": "outliers (RMSE)",
              "dropped_residual": "residual filter", "patches_kept": "kept"}


def drops(details: pd.DataFrame, sites: list[str]) -> Figure:
    """Grid patches by the rule that removed them (or kept), summed per site (a row per site): the
    bars add up to the patches of the common grids."""
    fig, ax = _per_site_axes(sites, 8)
    rules = {c: label for c, label in DROP_RULES.items() if c in details}
    totals = details.groupby("vns_site")[list(rules)].sum().reindex(sites).fillna(0)
    left = np.zeros(len(sites))
    for column, label in rules.items():
        ax.barh(range(len(sites)), totals[column], left=left, label=label)
        left += totals[column].to_numpy()
    ax.set_xlabel("patches of the common grid")
    ax.legend(fontsize=7, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return fig


def geometric_quality(table: pd.DataFrame, sites: list[str]) -> Figure:
    """CE90 (bars) and CE95 (marks) per site and band group, low-resolution pixels (``residual_table``)."""
    fig, ax = _per_site_axes(sites, 7)
    for k, (group, colour) in enumerate((("10 m", "tab:purple"), ("20 m", "tab:orange"))):
        rows = table[table["group"] == group].set_index("site").reindex(sites)
        y = np.arange(len(sites)) + (k - 0.5) * 0.4
        ax.barh(y, rows["ce90_px"], height=0.4, color=colour, alpha=0.6, label=f"{group} group, CE90")
        ax.plot(rows["ce95_px"], y, "|", color=colour, markersize=9, mew=2, label=f"{group} group, CE95")
    ax.axvline(0.3, color="k", ls="--", lw=1)
    ax.set_xlabel("circular error (low-resolution pixels)")
    ax.legend(fontsize=7, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return fig


def residuals(patches: pd.DataFrame, sites: list[str]) -> Figure:
    """Per site, the distribution of the residual misregistration of the patches (10 m and 20 m groups,
    metres): one box per site and group, and the histogram of all patches."""
    fig = Figure(figsize=(10, _site_height(len(sites)) + 0.5))
    axes = fig.subplots(1, 3, width_ratios=(1, 1, 1.2))
    for ax, group in zip(axes[:2], ("res10", "res20")):
        mags = [np.hypot(p[f"{group}_dx_m"], p[f"{group}_dy_m"])
                for p in (patches[patches["vns_site"] == s] for s in sites)]
        _boxes(ax, mags, sites)
        ax.set_ylim(len(sites) - 0.5, -0.5)
        ax.set_title(f"{'10' if group == 'res10' else '20'} m group", fontsize=9)
        ax.set_xlabel("|residual| (m)")
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    mags = {g: np.hypot(patches[f"{g}_dx_m"], patches[f"{g}_dy_m"]) for g in ("res10", "res20")}
    bins = np.linspace(0, max(float(np.nanmax(m)) if len(m) else 0 for m in mags.values()) + 1e-6, 41)
    for group, colour in (("res10", "tab:purple"), ("res20", "tab:orange")):
        mag = mags[group]
        axes[2].hist(mag, bins=bins, color=colour, histtype="step", lw=1.5, label=f"{group[3:]} m group")
        for q, style in ((0.5, "-"), (0.95, "--")):
            axes[2].axvline(float(np.quantile(mag, q)), color=colour, ls=style, lw=1)
    axes[2].set_xlabel("|residual| (m); median —, 95th percentile --")
    axes[2].set_ylabel("patches")
    axes[2].legend(fontsize=7)
    return fig


def residual_maps(patches: pd.DataFrame, sites: list[str], max_sites: int = 12) -> Figure:
    """Per site (the first ``max_sites``), where the patches are and what residual each keeps: patch
    centres coloured by |residual| of the 10 m group, arrows giving its direction (exaggerated)."""
    shown = [s for s in sites if (patches["vns_site"] == s).any()][:max_sites]
    cols = min(3, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_axis_off()
    for ax, site in zip(axes.flat, shown):
        p = patches[patches["vns_site"] == site]
        mag = np.hypot(p["res10_dx_m"], p["res10_dy_m"])
        sc = ax.scatter(p["x"] / 1000, p["y"] / 1000, c=mag, cmap="magma_r", vmin=0, s=14)
        ax.quiver(p["x"] / 1000, p["y"] / 1000, p["res10_dx_m"], p["res10_dy_m"], angles="xy", width=0.004,
                  color="tab:blue")
        ax.set_aspect("equal")
        ax.set_title(f"{site}: 10 m group residual", fontsize=8)
        ax.set_xlabel("easting (km)", fontsize=7)
        ax.set_ylabel("northing (km)", fontsize=7)
        fig.colorbar(sc, ax=ax, label="|residual| (m)")
    return fig


SAMPLE_COLUMNS = ["S2 10 m RGB", "VENµS 5 m RGB", "S2 10 m B8", "VENµS 5 m B8", "S2 20 m B7B6B5",
                  "VENµS 5 m B7B6B5", "S2 20 m B8A", "VENµS 5 m B8A"]


def sample_patches(entries, cfg: ReportConfig) -> Figure:
    """Sample patches as in the paper's Fig. 12: RGB and colour-mapped NIR, 5 m beside 10 / 20 m, pixel
    for pixel (the coarser patches repeated to the 5 m size), composed into one image (one axes: a
    fraction of the cost of 8 axes per row)."""
    from matplotlib import colormaps

    rng = random.Random(cfg.seed + 1)
    picks = [rng.choice([(e, j) for e in entries for j in range(e.n)]) for _ in range(cfg.sample_patches)]
    cmap, rows = colormaps["RdYlGn"], []
    for e, j in picks:
        s10, v10, s20, v20 = (load(e, c)[j].float() / SCALE for c in (
            "tensor_10m_b2b3b4b8", "tensor_05m_b2b3b4b8", "tensor_20m_b5b6b7b8a", "tensor_05m_b5b6b7b8a"))
        size = v10.shape[-1]
        tiles = []
        for img, scale in _panels(s10, v10, s20, v20):
            if img.dim() == 2:  # the same colour scale at 5 m and at the Sentinel-2 resolution
                img = torch.from_numpy(cmap(((img - scale[0]) / max(scale[1] - scale[0], 1e-9)).clamp(0, 1).numpy())
                                       [..., :3]).float()
            k = size // img.shape[0]
            tiles.append(img.repeat_interleave(k, 0).repeat_interleave(k, 1))
        gap = torch.ones(size, size // 32 + 1, 3)
        rows.append(torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=1))
    band = torch.ones(rows[0].shape[0] // 16 + 1, rows[0].shape[1], 3)
    mosaic = torch.cat([t for row in rows for t in (row, band)][:-1], dim=0).numpy()
    fig, ax = _figure(16, 0.4 + 2.0 * len(picks))
    ax.imshow(mosaic, interpolation="nearest")
    width = mosaic.shape[1] / 8
    ax.set_xticks([width * (c + 0.5) for c in range(8)], SAMPLE_COLUMNS, fontsize=8)
    ax.xaxis.tick_top()
    step = mosaic.shape[0] / len(picks)
    ax.set_yticks([step * (r + 0.5) for r in range(len(picks))], [f"{e.pair_id}\n#{j}" for e, j in picks],
                  fontsize=6)
    return fig


def _panels(s10: torch.Tensor, v10: torch.Tensor, s20: torch.Tensor, v20: torch.Tensor) -> list:
    rgb_max, re_max = float(s10[:3].quantile(0.99)), float(s20[:3].quantile(0.99))
    nir, nira = (float(s10[3].min()), float(s10[3].max())), (float(s20[3].min()), float(s20[3].max()))

    def rgb(x, m):
        return (x[[2, 1, 0]].permute(1, 2, 0) / m).clamp(0, 1), None

    return [rgb(s10, rgb_max), rgb(v10, rgb_max), (s10[3], nir), (v10[3], nir), rgb(s20, re_max), rgb(v20, re_max),
            (s20[3], nira), (v20[3], nira)]
