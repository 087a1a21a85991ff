"""``python -m jlstm.cli``: the ``jlstm`` command."""

import sys

from . import main

sys.exit(main())
