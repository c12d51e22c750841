"""``python -m rlvr_ray.task sample|score``: see :mod:`rlvr_ray.task.cli`."""

import sys

from rlvr_ray.task.cli import main

sys.exit(main())
