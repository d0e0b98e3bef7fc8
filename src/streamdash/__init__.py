"""streamdash: IoT telemetry from Event Hubs/Kafka through Spark Structured Streaming into InfluxDB."""

__version__ = "0.1.0"
