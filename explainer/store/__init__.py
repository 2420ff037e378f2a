"""The project's one DuckDB file: `Store` (every query) over `schema` (tables, views, migrations).

    from explainer.store import Store
    with Store.open("circuits.duckdb", read_only=True) as store:
        store.list_circuits("demo")
"""

from .schema import MIGRATIONS
from .store import DEFAULT_DB, ENV_VAR, Store, resolve_db_path

__all__ = ["DEFAULT_DB", "ENV_VAR", "MIGRATIONS", "Store", "resolve_db_path"]
