"""tlkit's version (re-exported as tlkit.__version__): a module of its own so the package can read it without
importing its facade."""

__version__ = "0.1.0"
