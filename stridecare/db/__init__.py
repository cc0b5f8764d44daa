"""The SQL adapter: schema, engine and sessions, sample packing, migrations."""
