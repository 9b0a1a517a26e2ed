"""Quality report of a generated dataset (the figures of the paper's section 3).

``python -m s2v_gpu.report paths.dataset=DATASET`` (also written at the end of every run) writes into
``DATASET/report/``: PNG figures, ``metrics.tsv`` (MAE and RMSE per site and band), ``report.html``
and ``report.json``. Modules: :mod:`.metrics` (numbers), :mod:`.figures` (each returns a Figure),
:mod:`.page` (HTML), :mod:`.build` (all of it), :mod:`.app` (the Hydra entry point). Importing the
package registers nothing with Hydra.
"""

from .build import build_report
from .metrics import ReportConfig, select_patches, site_metrics

__all__ = ["ReportConfig", "build_report", "select_patches", "site_metrics"]
