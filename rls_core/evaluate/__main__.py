"""`python -m rls_core.evaluate ...` = `rls evaluate ...`."""
import sys

from .cli import main

sys.exit(main())
