"""``python -m m3fmarl`` = the ``m3fmarl`` command."""

import sys

from m3fmarl.cli import main

sys.exit(main())
