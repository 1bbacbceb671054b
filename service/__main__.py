"""`python -m service` runs the `grsai-relay` command."""

import sys

from service.cli.main import main

sys.exit(main())
