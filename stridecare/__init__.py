"""stridecare: what the pipeline's stages share — settings, database, plugins, command line and web app."""

__version__ = "0.1.0"
