"""harmonia: search, track and ensemble audio tagging and SED models."""
__version__ = "0.1.0"
