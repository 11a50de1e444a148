"""The project's callbacks folder: the code lives in `unicr_pl.callbacks` (installed under that
unambiguous name); this re-export keeps `from callbacks import ...` working in a checkout."""

from unicr_pl.callbacks import CertificationCallback

__all__ = ["CertificationCallback"]
