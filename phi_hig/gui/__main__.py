"""``python -m phi_hig.gui [ARGS]``: the same as ``python -m phi_hig gui [ARGS]``."""
import sys

from . import main

sys.exit(main())
