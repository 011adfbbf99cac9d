"""Allow `python -m bindpkcs11`."""

from bindpkcs11.cli import main

raise SystemExit(main())
