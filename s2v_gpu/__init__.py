"""s2v_gpu: build SEN2VENuS-style Sentinel-2 / VENuS super-resolution datasets on GPU or CPU.

The library logs through :mod:`logging` under the ``s2v_gpu`` logger and installs no handler of its
own (the application, Hydra's job logging, does that).
"""

import logging

__version__ = "0.4.1"

logging.getLogger(__name__).addHandler(logging.NullHandler())
