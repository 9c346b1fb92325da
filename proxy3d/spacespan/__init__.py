"""SpaceSpan assembly with PySpark: native-format readers, one schema, quarantine, splits, curriculum."""

from proxy3d.spacespan.job import assemble, resolve_sources
from proxy3d.spacespan.session import get_spark

__all__ = ["assemble", "get_spark", "resolve_sources"]
