"""``python -m ase_equi.cli ARGS`` (also under ``torchrun ... -m ase_equi.cli train ...``)."""

import sys

from . import main

sys.exit(main())
