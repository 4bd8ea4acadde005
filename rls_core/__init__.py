"""SuperResolveRLS core library."""
__version__ = "0.4.5"
