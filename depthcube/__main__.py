"""``python -m depthcube ...``: the same as the ``depthcube`` console script."""

import sys

from depthcube.cli import main

sys.exit(main())
