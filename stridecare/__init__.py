"""stridecare: the shared base every floor above builds on — settings, runtime, clock, crypto, links, logging,
the plugin interfaces, the database (models, engine, migrations) and the pure ``domain``.

The command line and the web app are not here: they are the faces, in ``stridecare_app``.
"""

__version__ = "0.1.0"
