"""streamdash: IoT telemetry from Event Hubs/Kafka through Spark Structured Streaming into InfluxDB (the job)."""
