"""The faces of stridecare: the ``stridecare`` command line (``cli``) and the web app (``web``).

Nothing in the project imports this package; it sits on top of the workers, ingest, recommender, delivery and
the shared base, and only calls down into them.
"""
