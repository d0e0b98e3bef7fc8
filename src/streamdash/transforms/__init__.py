"""Pure DataFrame -> DataFrame transforms: parse and validate, then aggregate on event time."""
