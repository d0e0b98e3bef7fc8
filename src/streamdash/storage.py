"""Files through Hadoop's FileSystem API, the one that reaches every store Spark does (local disk, DBFS, Unity
Catalog volumes, abfss): checkpoints and dead letters live there."""

from __future__ import annotations

from pyspark.sql import SparkSession


def hadoop_path(spark: SparkSession, path: str):
    return spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)


def file_system(spark: SparkSession, path: str):
    """Hadoop's FileSystem that holds `path` (by its scheme: file, dbfs, abfss, ...)."""
    return hadoop_path(spark, path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def replace_folder_with_file(spark: SparkSession, folder: str, name: str, data: bytes) -> None:
    """`folder` replaced by one holding only the file `name`: written under a hidden name (`_` + name: Spark's
    readers skip it) and renamed when complete, so a reader never sees half of it."""
    fs = file_system(spark, folder)
    fs.delete(hadoop_path(spark, folder), True)
    staged, final = hadoop_path(spark, f"{folder}/_{name}"), hadoop_path(spark, f"{folder}/{name}")
    out = fs.create(staged, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()
    if not fs.rename(staged, final):
        raise OSError(f"could not rename {staged} to {final}")


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
    stream = file_system(spark, path).create(hadoop_path(spark, path), False)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()
