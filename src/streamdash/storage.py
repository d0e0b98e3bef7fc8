"""Files through Hadoop's FileSystem API, the one that reaches every store Spark does (local disk, DBFS, Unity
Catalog volumes, abfss): checkpoints and dead letters live there."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import SparkSession


def hadoop_path(spark: SparkSession, path: str):
    return spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)


def file_system(spark: SparkSession, path: str):
    """Hadoop's FileSystem that holds `path` (by its scheme: file, dbfs, abfss, ...)."""
    return hadoop_path(spark, path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def replace_parts(spark: SparkSession, folder: str, owner: str, write: Callable[[str], None]) -> None:
    """Replace the files `owner` has in `folder` (`part-<owner>-<n>.json`) with the `part-*` files `write(staging)`
    puts in a staging folder (`_<owner>`: Spark's readers skip it), and leave other owners' files alone: a replay of
    a batch replaces what it wrote before, a new checkpoint's batch of the same number (another owner) keeps the
    old one's."""
    fs, staging = file_system(spark, folder), f"{folder}/_{owner}"
    fs.delete(hadoop_path(spark, staging), True)
    write(staging)
    for status in fs.listStatus(hadoop_path(spark, folder)):
        if status.getPath().getName().startswith(f"part-{owner}-"):
            fs.delete(status.getPath(), False)
    staged = sorted((status.getPath() for status in fs.listStatus(hadoop_path(spark, staging))
                     if status.getPath().getName().startswith("part-")), key=lambda path: path.getName())
    for number, path in enumerate(staged):
        final = hadoop_path(spark, f"{folder}/part-{owner}-{number}.json")
        if not fs.rename(path, final):
            raise OSError(f"could not rename {path} to {final}")
    fs.delete(hadoop_path(spark, staging), True)


def write_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    """A new file holding `data` (refused if the file exists)."""
    stream = file_system(spark, path).create(hadoop_path(spark, path), False)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str | None:
    """A small file's text, or None when there is no such file."""
    fs, file = file_system(spark, path), hadoop_path(spark, path)
    if not fs.exists(file):
        return None
    stream = fs.open(file)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """A new small file holding `text` (refused if the file exists)."""
    write_bytes(spark, path, text.encode())
