"""``python -m streamlib``: the same command line as ``streamlib``."""

from streamlib.cli import main

raise SystemExit(main())
