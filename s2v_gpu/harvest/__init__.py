"""Harvesting the archive: from a site name to the same-day products on disk (the paper's first
step), through a STAC catalogue (GEODES by default).

Modules: :mod:`.config` (typed settings), :mod:`.catalog` (the search), :mod:`.plan` (the pairing of
the offers), :mod:`.download` (resumable, verified downloads), :mod:`.app` (the console command and
:func:`~s2v_gpu.harvest.app.harvest_sites`). The package imports only its configuration, so that
the run's configuration can hold it.
"""

from .config import CatalogConfig, DownloadConfig, HarvestAppConfig, HarvestConfig

__all__ = ["CatalogConfig", "DownloadConfig", "HarvestAppConfig", "HarvestConfig"]
