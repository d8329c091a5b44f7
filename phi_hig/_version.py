"""The version of phi_hig (read by the build from here, re-exported as ``phi_hig.__version__``)."""
__version__ = "0.1.0"
