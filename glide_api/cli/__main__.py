"""``python -m glide_api.cli``: the same as the ``glide-api`` command."""

import sys

from glide_api.cli import main

sys.exit(main())
