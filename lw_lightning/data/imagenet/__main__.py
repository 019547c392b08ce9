"""``python -m lw_lightning.data.imagenet --make-tiny DIR``: write a tiny copy (see :mod:`.tiny`)."""

from .tiny import main

raise SystemExit(main())
