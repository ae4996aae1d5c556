"""``python -m freqd`` is the ``freqd`` console script."""

from freqd.cli import main

raise SystemExit(main())
