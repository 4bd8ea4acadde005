"""`python -m rls_core ...` is the `rls` command (for machines where it is not installed)."""
import sys

from .cli import main

sys.exit(main())
