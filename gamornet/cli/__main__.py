"""``python -m gamornet.cli``: the ``gamornet`` command."""

import sys

from gamornet.cli.main import main

sys.exit(main())
