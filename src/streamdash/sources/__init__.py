"""Sources: read the raw telemetry stream into one normalised shape (see `columns.RAW_COLUMNS`)."""
