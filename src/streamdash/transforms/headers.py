"""Fields read from beside the JSON body: a Kafka header, the record's key, the broker's timestamp, each as a VARIANT
with the type a JSON value would have, so that the parse judges them as it judges the body's fields.

Azure IoT Hub routes its system properties (`iothub-connection-device-id`, `iothub-enqueuedtime`, ...) and the
devices' application properties to Event Hubs, whose Kafka endpoint delivers them as headers holding each value's
AMQP encoding (AMQP 1.0 part 1, 1.6: a constructor byte, a size where the type has one, the data, big-endian).
A header from a Kafka producer holds the bytes it sent. `contract.header_encoding` says which to expect:

- `amqp` (IoT Hub, the Azure SDKs): bytes that are exactly one AMQP encoding of a type below, their length
  included, are its value; other bytes are text.
- `plain` (Kafka producers): the bytes are UTF-8 text.
- `auto` (both): UTF-8 text without control characters is text; other bytes are read as with `amqp` (a string's
  first byte, 0xA1, starts no UTF-8 text; the integer 3 as 0x54 0x03 holds a control character). An AMQP value
  whose bytes happen to be printable text (true as 0x41, "A"; 65 as 0x54 0x41, "TA") is read as that text.

Text where a number or a boolean belongs is read as a JSON number, `true` or `false` (nothing around it), and is
text otherwise (so `wrong_type` unless `numeric_strings`). An AMQP timestamp is a TIMESTAMP (the event time reads
it whatever `event_time_formats` say); an AMQP null is absent.
"""

from __future__ import annotations

from decimal import Decimal

from pyspark.sql import Column
from pyspark.sql import functions as F

from streamdash.config import HEADER_PREFIX, KEY, TIMESTAMP

# A JSON number (as JSON writes it: no sign, space or leading zero more), true or false, and nothing around it.
_JSON_SCALAR = r"^(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false)$"
_TIMESTAMP_MS_LIMIT = 9_000_000_000_000_000 // 1000  # Spark's timestamps hold +-9.2e18 microseconds


def header(headers: Column, name: str) -> Column:
    """The value of the last header named `name` (Kafka allows a name more than once); null where there is none."""
    return F.try_element_at(F.filter(headers, lambda h: h["key"] == name), F.lit(-1))["value"]


def field(path: str, text: bool, encoding: str) -> Column:
    """The field at a `config.FieldPath` that is not a JSON path, from the raw columns, as a VARIANT; `text`: the
    contract reads it as text; `encoding`: `contract.header_encoding`."""
    if path == TIMESTAMP:
        return F.col("kafka_timestamp").cast("variant")
    if path == KEY:
        return _from_text(F.col("key"), text)
    assert path.startswith(HEADER_PREFIX)
    return decoded(header(F.col("headers"), path.removeprefix(HEADER_PREFIX)), text, encoding)


def _from_text(value: Column, text: bool) -> Column:
    """Text as text; where a number or a boolean belongs, a JSON number, `true` or `false` as that value."""
    string = value.cast("string")
    if text:
        return string.cast("variant")
    return F.when(string.rlike(_JSON_SCALAR), F.try_parse_json(string)).otherwise(string.cast("variant"))


def _power_of_two(exponent: int) -> Column:
    """2 ** exponent as an exact decimal literal (py4j takes no Python int beyond a long)."""
    return F.lit(Decimal(2**exponent)).cast("decimal(20,0)")


def _byte(value: Column, position: int) -> Column:
    return F.conv(F.hex(F.substring(value, position, 1)), 16, 10).cast("int")


def _unsigned(data: Column) -> Column:
    return F.conv(F.hex(data), 16, 10).cast("decimal(20,0)")


def _signed(data: Column, size: int) -> Column:
    unsigned = _unsigned(data)
    return F.when(unsigned >= _power_of_two(8 * size - 1), unsigned - _power_of_two(8 * size)) \
        .otherwise(unsigned).cast("long")


def _binary_float(data: Column, exponent_bits: int, fraction_bits: int) -> Column:
    """IEEE 754 bits (4 or 8 bytes) as the double they stand for, exactly (a float widens to a double without loss):
    Java's `Math.pow` of 2 to an integer is exact where the result is a double."""
    bits = _unsigned(data)
    fraction = F.pmod(bits, 2 ** fraction_bits)
    exponent = F.pmod(F.floor(bits / 2 ** fraction_bits), 2 ** exponent_bits).cast("int")
    negative = bits >= _power_of_two(exponent_bits + fraction_bits)
    bias, top = 2 ** (exponent_bits - 1) - 1 + fraction_bits, 2 ** exponent_bits - 1
    magnitude = (F.when(exponent == top, F.when(fraction == 0, F.lit(float("inf"))).otherwise(F.lit(float("nan"))))
                 .when(exponent == 0, fraction.cast("double") * F.pow(F.lit(2.0), F.lit(1 - bias)))
                 .otherwise((fraction + 2 ** fraction_bits).cast("double") * F.pow(F.lit(2.0), exponent - bias)))
    return F.when(negative, -magnitude).otherwise(magnitude)


def _timestamp(milliseconds: Column) -> Column:
    """An AMQP timestamp: a TIMESTAMP where Spark can hold it, else the number (which no event time is)."""
    return F.when(F.abs(milliseconds) <= _TIMESTAMP_MS_LIMIT, F.timestamp_millis(milliseconds).cast("variant")) \
        .otherwise(milliseconds.cast("variant"))


def _uuid(data: Column) -> Column:
    return F.regexp_replace(F.lower(F.hex(data)), r"^(.{8})(.{4})(.{4})(.{4})(.{12})$", "$1-$2-$3-$4-$5")


def _amqp(value: Column) -> dict[str, tuple[Column, Column]]:
    """Per AMQP constructor read: (whether `value` is exactly one such encoding, the value it encodes)."""
    size = F.octet_length(value)

    def fixed(length: int, decoded: Column) -> tuple[Column, Column]:
        return size == 1 + length, decoded

    def variable(width: int) -> tuple[Column, Column]:
        length = _unsigned(F.substring(value, 2, width)).cast("long")
        return size == 1 + width + length, F.substring(value, 2 + width, 2**31 - 1).cast("string")

    def unsigned(length: int) -> Column:
        number = _unsigned(F.substring(value, 2, length))
        return F.when(number < _power_of_two(63), number.cast("long").cast("variant")).otherwise(number.cast("variant"))

    def signed(length: int) -> Column:
        return _signed(F.substring(value, 2, length), length)

    zero = F.lit(0).cast("long")
    return {
        "40": fixed(0, F.lit(None)), "41": fixed(0, F.lit(True)), "42": fixed(0, F.lit(False)),
        "56": ((size == 2) & (_byte(value, 2) <= 1), _byte(value, 2) == 1),
        "43": fixed(0, zero), "44": fixed(0, zero),
        "50": fixed(1, unsigned(1)), "52": fixed(1, unsigned(1)), "53": fixed(1, unsigned(1)),
        "51": fixed(1, signed(1)), "54": fixed(1, signed(1)), "55": fixed(1, signed(1)),
        "60": fixed(2, unsigned(2)), "61": fixed(2, signed(2)),
        "70": fixed(4, unsigned(4)), "71": fixed(4, signed(4)),
        "72": fixed(4, _binary_float(F.substring(value, 2, 4), 8, 23)),
        "80": fixed(8, unsigned(8)), "81": fixed(8, signed(8)),
        "82": fixed(8, _binary_float(F.substring(value, 2, 8), 11, 52)),
        "83": fixed(8, _timestamp(signed(8))),
        "98": fixed(16, _uuid(F.substring(value, 2, 16))),
        **{code: variable(1) for code in ("A0", "A1", "A3")}, **{code: variable(4) for code in ("B0", "B1", "B3")},
    }


def decoded(value: Column, text: bool, encoding: str = "auto") -> Column:
    """A header's bytes as a VARIANT: its AMQP value where `encoding` (the module's rules) reads one, else text."""
    result = _from_text(value, text)
    if encoding == "plain":
        return result
    constructor = F.hex(F.substring(value, 1, 1))
    as_string = value.cast("string")
    amqp_first = (F.lit(True) if encoding == "amqp"
                  else ~F.is_valid_utf8(as_string) | as_string.rlike("[\\x00-\\x1f\\x7f]"))
    for code, (exact, amqp) in _amqp(value).items():
        result = F.when(amqp_first & (constructor == code) & exact, amqp.cast("variant")).otherwise(result)
    return result
