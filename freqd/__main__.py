"""``python -m freqd`` is the ``freqd`` console script."""

from freqd.cli import main

if __name__ == "__main__":  # not when a spawned rank process (``--nproc``) imports this module
    raise SystemExit(main())
