"""Sources: read the raw telemetry stream into one normalised shape (see `sources.kafka.RAW_COLUMNS`)."""
