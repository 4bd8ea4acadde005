"""SuperResolveRLS core library."""
__version__ = "0.3.0"
