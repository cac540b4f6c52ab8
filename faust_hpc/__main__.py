"""``python -m faust_hpc`` is the same as the ``faust-hpc`` command."""
from faust_hpc.cli import main

raise SystemExit(main())
