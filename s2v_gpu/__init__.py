"""s2v_gpu: build SEN2VENuS-style Sentinel-2 / VENuS super-resolution datasets on GPU or CPU.

The library logs through :mod:`logging` under the ``s2v_gpu`` logger and installs no handler of its
own (the application, Hydra's job logging, does that).

Importing it makes OpenMP's idle threads yield their cores (``OMP_WAIT_POLICY=PASSIVE``, unless the
variable is set; :mod:`s2v_gpu.openmp`): every console command imports it before torch.
"""

import logging

from . import openmp  # noqa: F401  (before anything loads torch: the runtime reads the policy once)

__version__ = "0.5.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
