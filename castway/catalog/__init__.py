"""The catalog: durable records on SQLite or PostgreSQL (see ``base.py``)."""

from __future__ import annotations

from castway.catalog.base import AlreadyExists, Catalog, CatalogError, NotFound
from castway.catalog.sql import CatalogUnavailable, SqlCatalog
from castway.settings import Settings


def open_catalog(settings: Settings) -> SqlCatalog:
    """The catalog at ``settings.effective_database_url``, migrated to the newest schema."""
    catalog = SqlCatalog(settings.effective_database_url, timeout_s=settings.catalog_timeout_s)
    try:
        catalog.migrate()
    except BaseException:
        catalog.close()
        raise
    return catalog


__all__ = ["AlreadyExists", "Catalog", "CatalogError", "CatalogUnavailable", "NotFound",
           "SqlCatalog", "open_catalog"]
