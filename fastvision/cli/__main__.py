"""`python -m fastvision.cli ...`: the same as the `fastvision` command."""

import sys

from fastvision.cli import main

sys.exit(main())
