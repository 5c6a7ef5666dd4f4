"""``python -m evowatt.cli.main``."""

from evowatt.cli.main import main

raise SystemExit(main())
