"""The SQL adapter: schema and migrations, the engine with its two units of work (``read``, ``transaction``),
athletes by handle, named leases, the replan mark, sample packing and a stored run's JSON."""
