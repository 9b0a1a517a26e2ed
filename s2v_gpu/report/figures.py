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


def pairs_per_site(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 5."""
    fig, ax = _figure(6, 3)
    index.groupby("vns_site").size().reindex(sites).plot.bar(ax=ax, color="tab:blue")
    ax.set_ylabel("pairs")
    return fig


def dates_per_site(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 6."""
    fig, ax = _figure(7, 3)
    for k, s in enumerate(sites):
        dates = pd.to_datetime(index.loc[index["vns_site"] == s, "date"])
        ax.plot(dates, [k] * len(dates), "o", ms=4)
    ax.set_yticks(range(len(sites)), sites)
    return fig


def time_deltas(details: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 7 (``details`` carries the site of each pair in ``vns_site``)."""
    fig, ax = _figure(6, 3)
    if len(details):
        ax.boxplot([details.loc[details["vns_site"] == s, "dt_minutes"] for s in sites])
        ax.set_xticks(range(1, len(sites) + 1), sites)
    ax.set_ylabel("Δt S2 − VENµS (min)")
    return fig


def patches_per_site(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 8."""
    fig, ax = _figure(6, 3)
    index.groupby("vns_site")["nb_patches"].sum().reindex(sites).plot.bar(ax=ax, color="tab:green")
    ax.set_ylabel("patches")
    return fig


def patches_per_pair(index: pd.DataFrame, sites: list[str]) -> Figure:
    """Paper Fig. 9."""
    fig, ax = _figure(6, 3)
    ax.boxplot([index.loc[index["vns_site"] == s, "nb_patches"] for s in sites])
    ax.set_xticks(range(1, len(sites) + 1), sites)
    ax.set_ylabel("patches per pair")
    return fig


def metric_table(mdf: pd.DataFrame, metric: str) -> Figure:
    """Paper Figs. 10 (MAE) and 11 (RMSE): per band and site."""
    table = mdf.pivot(index="site", columns="band", values=metric).reindex(columns=BANDS)
    fig, ax = _figure(7, 0.6 + 0.4 * len(table.index))
    im = ax.imshow(table.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(BANDS)), BANDS)
    ax.set_yticks(range(len(table.index)), table.index)
    for (i, j), v in np.ndenumerate(table.values):
        ax.text(j, i, f"{v:.4f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax)
    return fig


def shifts_and_drops(details: pd.DataFrame) -> Figure:
    """Registration shifts and the patches dropped by each rule, per pair."""
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    axes[0].scatter(details["shift_dx_m"], details["shift_dy_m"], c=details["n_matches"], cmap="plasma")
    axes[0].set_xlabel("dx east (m)")
    axes[0].set_ylabel("dy north (m)")
    axes[0].set_title("registration shifts")
    drop = details.set_index("pair_id")[["dropped_invalid", "fit_excluded", "dropped_selection", "dropped_outlier",
                                         "patches_kept"]]
    drop.plot.barh(stacked=True, ax=axes[1], legend=True, fontsize=6)
    axes[1].set_title("patches by rule")
    return fig


def residuals(patches: pd.DataFrame, sites: list[str]) -> Figure:
    """Per site, the distribution of the residual misregistration of the patches (10 m and 20 m
    groups, metres), median and 95th percentile marked."""
    fig = Figure(figsize=(9, 0.6 + 1.6 * len(sites)))
    axes = fig.subplots(len(sites), 2, squeeze=False)
    for i, site in enumerate(sites):
        rows = patches[patches["vns_site"] == site]
        for j, group in enumerate(("res10", "res20")):
            ax = axes[i, j]
            mag = np.hypot(rows[f"{group}_dx_m"], rows[f"{group}_dy_m"])
            if len(mag):
                ax.hist(mag, bins=30, color="tab:purple")
                for q, style in ((0.5, "-"), (0.95, "--")):
                    ax.axvline(float(np.quantile(mag, q)), color="k", ls=style, lw=1)
            ax.set_title(f"{site}: {'10' if group == 'res10' else '20'} m group (median —, p95 --)", fontsize=8)
            ax.set_xlabel("residual misregistration (m)", fontsize=8)
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


def sample_patches(entries, cfg: ReportConfig) -> Figure:
    """Sample patches as in the paper's Fig. 12: RGB and colour-mapped NIR, 5 m beside 10 / 20 m."""
    rng = random.Random(cfg.seed + 1)
    picks = [rng.choice([(e, j) for e in entries for j in range(e.n)]) for _ in range(cfg.sample_patches)]
    cols = ["S2 10 m RGB", "VENµS 5 m RGB", "S2 10 m B8", "VENµS 5 m B8", "S2 20 m B7B6B5", "VENµS 5 m B7B6B5",
            "S2 20 m B8A", "VENµS 5 m B8A"]
    fig = Figure(figsize=(16, 2.2 * len(picks)))
    axes = fig.subplots(len(picks), 8, squeeze=False)
    for r, (e, j) in enumerate(picks):
        s10, v10, s20, v20 = (load(e, c)[j].float() / SCALE for c in (
            "tensor_10m_b2b3b4b8", "tensor_05m_b2b3b4b8", "tensor_20m_b5b6b7b8a", "tensor_05m_b5b6b7b8a"))
        for c, (img, scale) in enumerate(_panels(s10, v10, s20, v20)):
            ax = axes[r, c]
            if img.dim() == 2:  # the same colour scale at 5 m and at the Sentinel-2 resolution
                ax.imshow(img.numpy(), cmap="RdYlGn", vmin=scale[0], vmax=scale[1])
            else:
                ax.imshow(img.numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
        axes[r, 0].set_ylabel(f"{e.pair_id}\n#{j}", fontsize=6)
    return fig


def _panels(s10: torch.Tensor, v10: torch.Tensor, s20: torch.Tensor, v20: torch.Tensor) -> list:
    rgb_max, re_max = float(s10[:3].quantile(0.99)), float(s20[:3].quantile(0.99))
    nir, nira = (float(s10[3].min()), float(s10[3].max())), (float(s20[3].min()), float(s20[3].max()))

    def rgb(x, m):
        return (x[[2, 1, 0]].permute(1, 2, 0) / m).clamp(0, 1), None

    return [rgb(s10, rgb_max), rgb(v10, rgb_max), (s10[3], nir), (v10[3], nir), rgb(s20, re_max), rgb(v20, re_max),
            (s20[3], nira), (v20[3], nira)]
