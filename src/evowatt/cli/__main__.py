"""``python -m evowatt.cli``."""

from evowatt.cli.main import main

raise SystemExit(main())
