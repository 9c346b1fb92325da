"""The one Spark session of a process: quiet, local by default, any master from params or the CLI."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from pyspark.sql import SparkSession

from proxy3d.io import atomic_write_text

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


def check_java() -> str:
    """Path of the ``java`` PySpark will start, or a RuntimeError saying how to install one."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH and JAVA_HOME is unset"
        raise RuntimeError(f"PySpark needs a Java 17 runtime but {where}; install one (Debian/Ubuntu: "
                           "`apt-get install -y openjdk-17-jre-headless`) or set JAVA_HOME to a JDK/JRE 17 folder")
    return java


_LOG4J = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


def _log4j_config() -> str:
    """A log4j2 file that keeps Spark's JVM at ERROR from the first line on (setLogLevel acts only later)."""
    path = Path(tempfile.gettempdir()) / "proxy3d-spark-log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J:
        atomic_write_text(path, _LOG4J)
    return str(path)


def get_spark(master: str = "local[2]", driver_memory: str = "2g", shuffle_partitions: int = 4,
              app: str = "proxy3d-spacespan") -> SparkSession:
    """Start (or reuse) the process's Spark session. ``SPARK_LOCAL_IP`` defaults to 127.0.0.1."""
    check_java()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    spark = (SparkSession.builder.master(master).appName(app)
             .config("spark.driver.memory", driver_memory)
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.ansi.enabled", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_log4j_config()}")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    log.info("spark %s session on %s", spark.version, master)
    return spark
