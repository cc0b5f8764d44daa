"""The decode guard's count of unfinished reads looks one content up by its hash, on both databases, instead of
reading the whole import log for every file (a cost that grew with the history: an import quadratic in its
files)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from ingest.service import unfinished_query
from stridecare.runtime import Runtime


def _plan(rt: Runtime) -> str:
    query = unfinished_query("ab" * 32)
    with rt.db.engine.connect() as conn:
        if rt.db.engine.dialect.name == "sqlite":
            sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            return "\n".join(str(row[-1]) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        # With a handful of rows PostgreSQL would rightly scan: forbid that, so that the plan shows whether an
        # index can serve the lookup at all.
        conn.execute(text("SET enable_seqscan = off"))
        sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        return "\n".join(str(row[0]) for row in conn.execute(text(f"EXPLAIN {sql}")))


def test_the_guards_count_of_unfinished_reads_is_an_index_lookup_by_hash(any_rt: Runtime) -> None:
    plan = _plan(any_rt)
    assert "ix_imported_files_content_hash" in plan, plan
    assert "SCAN imported_files" not in plan and "Seq Scan" not in plan, plan
