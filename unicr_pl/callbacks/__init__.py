"""Lightning callbacks of unicr-pl (Lightning layer: they import the maths layer, never the
reverse)."""

from unicr_pl.callbacks.certification import CertificationCallback

__all__ = ["CertificationCallback"]
