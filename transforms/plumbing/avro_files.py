"""Avro container files written fast, for records already checked against their schema.

Why not fastavro's Writer: it costs ~80-115 µs a routed record, most of it choosing a branch for each union
value by validating the value against every branch (a whole nested record for `["null", Record]`), and
the routed records were checked once already (BuildRoutedRecords, so a bad one is a dead letter). Here the
schema is compiled once into straight-line Python that encodes a record with no checks beyond what
encoding needs (a wrong type still raises, it is never written as something else), and the container
(header, deflate blocks, sync markers: the Avro 1.11 object container format) is written directly.

Files are standard Avro: fastavro, DuckDB and BigQuery read them (tests/test_avro_files.py decodes them
with fastavro and compares with fastavro's own encoding). The sync marker is derived from the file's
schema and first block instead of drawn at random, so the same records in the same order give the same
bytes: a content-addressed file is byte-identical in every run that writes it.
"""
import copy
import hashlib
import json
import struct

import fastavro
from isal import isal_zlib

MAGIC = b"Obj\x01"
SYNC_BYTES = 16
BLOCK_BYTES = 64 * 1024  # uncompressed bytes per block: deflate works better on 64 KB than fastavro's 16 KB
DEFLATE_LEVEL = 2  # ISA-L's: routed records as small as fastavro's zlib level 6 makes them, ~5x faster
SIZES = 16384  # strings and arrays shorter than this take their length from a table
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


def _varint(unsigned):
    out = bytearray()
    while unsigned > 0x7F:
        out.append((unsigned & 0x7F) | 0x80)
        unsigned >>= 7
    out.append(unsigned)
    return bytes(out)


_VARINT_14 = [_varint(unsigned) for unsigned in range(1 << 14)]  # a whole varint below 2**14
_CONTINUED_14 = [bytes([(bits & 0x7F) | 0x80, (bits >> 7) | 0x80]) for bits in range(1 << 14)]  # 14 bits, more follow


def write_long(out, number):
    """Appends an Avro int/long (zig-zag varint) to the bytearray `out`, 14 bits a step (a timestamp in 4)."""
    unsigned = (number << 1) ^ (number >> 63)
    while unsigned >= 1 << 14:
        out += _CONTINUED_14[unsigned & 0x3FFF]
        unsigned >>= 14
    out += _VARINT_14[unsigned]


def long_bytes(number):
    out = bytearray()
    write_long(out, number)
    return bytes(out)


class UnsupportedSchema(ValueError):
    """A schema this encoder does not compile (it names the construct); fastavro's Writer handles any."""


def compile_encoder(schema, repeated=()):
    """`encode(out, record)`: appends the Avro binary encoding of `record` to the bytearray `out`.

    Like fastavro's writer, absent fields with a default are written as their default; unions must be
    a type and null (`["null", X]`), the only kind tipline's schemas use. Two encoders are compiled: a
    fast one for records that hold every field and no string or array of 16,384 or more (subscripts,
    lengths from a table), and one for any record, which rewrites the record when the fast one meets
    another (KeyError, IndexError). The fast one keeps the last value of each top-level field named in
    `repeated` (one that is mostly the same from record to record) with its bytes, and copies them
    when the next value is equal."""
    named = {}
    parsed = fastavro.parse_schema(schema, named_schemas=named)
    fast = _EncoderSource(named, fast=True, repeated=repeated).compile(parsed)
    general = _EncoderSource(named, fast=False).compile(parsed)

    def encode(out, record):
        start = len(out)
        try:
            fast(out, record)
        except (KeyError, IndexError):
            del out[start:]
            general(out, record)

    return encode


class _EncoderSource:
    """Python source for one schema: each value encoded inline, a named type that contains itself as a
    function of its own."""

    def __init__(self, named, fast, repeated=()):
        self.named = named
        self.fast = fast
        self.repeated = frozenset(repeated)
        self.constants = {"write_long": write_long, "DOUBLE": _DOUBLE.pack, "FLOAT": _FLOAT.pack,
                          "SIZE": [long_bytes(size) for size in range(SIZES)],
                          "PRESENT_SIZE": [b"\x02" + long_bytes(size) for size in range(SIZES)],
                          "deepcopy": copy.deepcopy}
        self.functions = {}  # full name -> function name, for recursive types
        self.inlining = []
        self.variables = 0

    def compile(self, parsed):
        body = []
        self.value(parsed, "record", body, 1)
        lines = [f"def encode(out, record, {self.local_constants()}):"] + body
        written = set()
        while len(written) < len(self.functions):  # a function's body may call for another
            for name, function in list(self.functions.items()):
                if name not in written:
                    written.add(name)
                    lines += self.function_lines(name, function)
        namespace = dict(self.constants)
        exec(compile("\n".join(lines), "<avro encoder>", "exec"), namespace)  # noqa: S102 - our own source
        return namespace["encode"]

    def function_lines(self, name, function):
        body = []
        self.inlining.append(name)
        self.value(self.named[name], "value", body, 1)
        self.inlining.pop()
        return [f"def {function}(out, value, {self.local_constants()}):"] + body

    def local_constants(self):
        """The helpers as default arguments: fast locals in the generated function, not globals."""
        return ", ".join(f"{name}={name}" for name in ("write_long", "SIZE", "PRESENT_SIZE", "DOUBLE", "FLOAT"))

    def variable(self, stem):
        self.variables += 1
        return f"{stem}{self.variables}"

    def constant(self, value):
        name = self.variable("C")
        self.constants[name] = value
        return name

    def value(self, schema, expression, lines, depth):
        pad = "    " * depth
        if isinstance(schema, str):
            return self.named_or_primitive(schema, expression, lines, depth)
        if isinstance(schema, list):
            return self.union(schema, expression, lines, depth)
        kind = schema["type"]
        if kind == "record":
            return self.record(schema, expression, lines, depth)
        if kind == "array":
            items, item = self.variable("items"), self.variable("item")
            lines += [f"{pad}{items} = {expression}", f"{pad}if {items}:", f"{pad}    {self.size(items)}",
                      f"{pad}    for {item} in {items}:"]
            self.value(schema["items"], item, lines, depth + 2)
            lines.append(f"{pad}out.append(0)")
            return
        if kind == "map":
            entries, key, item = self.variable("entries"), self.variable("key"), self.variable("item")
            lines += [f"{pad}{entries} = {expression}", f"{pad}if {entries}:",
                      f"{pad}    write_long(out, len({entries}))", f"{pad}    for {key}, {item} in {entries}.items():"]
            self.value("string", key, lines, depth + 2)
            self.value(schema["values"], item, lines, depth + 2)
            lines.append(f"{pad}out.append(0)")
            return
        if kind == "enum":
            index = self.constant({symbol: position for position, symbol in enumerate(schema["symbols"])})
            lines.append(f"{pad}write_long(out, {index}[{expression}])")
            return
        if kind == "fixed":
            lines.append(f"{pad}out += {expression}")
            return
        if schema.get("logicalType") in ("timestamp-micros", "timestamp-millis"):  # never small: no table
            lines.append(f"{pad}write_long(out, {expression})")
            return
        return self.value(kind, expression, lines, depth)  # a primitive with a logical type: its base type

    def named_or_primitive(self, name, expression, lines, depth):
        pad = "    " * depth
        if name == "null":
            return
        if name == "boolean":
            lines.append(f"{pad}out.append(1 if {expression} else 0)")
        elif name in ("int", "long"):
            number = self.variable("number")
            lines += [f"{pad}{number} = {expression}", f"{pad}if 0 <= {number} < {SIZES}:",
                      f"{pad}    out += SIZE[{number}]", f"{pad}else:", f"{pad}    write_long(out, {number})"]
        elif name in ("string", "bytes"):
            data = self.variable("data")
            lines += [f"{pad}{data} = {expression}" + (".encode()" if name == "string" else ""),
                      f"{pad}{self.size(data)}", f"{pad}out += {data}"]
        elif name == "double":
            lines.append(f"{pad}out += DOUBLE({expression})")
        elif name == "float":
            lines.append(f"{pad}out += FLOAT({expression})")
        elif name in self.named:
            if name in self.inlining:  # recursive: a function of its own
                function = self.functions.setdefault(name, self.variable("encode_named"))
                lines.append(f"{pad}{function}(out, {expression})")
            else:
                self.inlining.append(name)
                self.value(self.named[name], expression, lines, depth)
                self.inlining.pop()
        else:
            raise UnsupportedSchema(f"unknown Avro type {name!r}")

    def size(self, sized):
        """The statement writing the length of a string or array."""
        return f"out += SIZE[len({sized})]" if self.fast else f"write_long(out, len({sized}))"

    def union(self, branches, expression, lines, depth):
        pad = "    " * depth
        others = [index for index, branch in enumerate(branches) if branch != "null"]
        if len(branches) != 2 or len(others) != 1:
            raise UnsupportedSchema(f"union {branches!r}: only [\"null\", type] unions are compiled")
        (other,) = others
        value = self.variable("optional")
        lines += [f"{pad}{value} = {expression}", f"{pad}if {value} is None:",
                  f"{pad}    out.append({2 * (1 - other)})", f"{pad}else:"]
        if self.fast and other == 1 and branches[other] == "string":  # index 1 and length from one table
            data = self.variable("data")
            lines += [f"{pad}    {data} = {value}.encode()", f"{pad}    out += PRESENT_SIZE[len({data})]",
                      f"{pad}    out += {data}"]
            return
        lines.append(f"{pad}    out.append({2 * other})")
        self.value(branches[other], value, lines, depth + 1)

    def record(self, schema, expression, lines, depth):
        pad = "    " * depth
        record = self.variable("record")
        lines.append(f"{pad}{record} = {expression}")
        for field in schema["fields"]:
            name = json.dumps(field["name"])
            value = (f"{record}.get({name}, {self.constant(field['default'])})" if "default" in field and not self.fast
                     else f"{record}[{name}]")
            if expression == "record" and field["name"] in self.repeated:  # a top-level field
                self.remembered(field["type"], value, lines, depth)
            else:
                self.value(field["type"], value, lines, depth)

    def remembered(self, schema, expression, lines, depth):
        """A value encoded once while it stays equal: the last (copy of the value, its bytes) is swapped in
        as one reference, so threads sharing the encoder never pair a value with another's bytes."""
        pad = "    " * depth
        memo, value, last, start = self.constant([(object(), b"")]), self.variable("value"), \
            self.variable("last"), self.variable("start")
        lines += [f"{pad}{value} = {expression}", f"{pad}{last} = {memo}[0]", f"{pad}if {value} == {last}[0]:",
                  f"{pad}    out += {last}[1]", f"{pad}else:", f"{pad}    {start} = len(out)"]
        self.value(schema, value, lines, depth + 1)
        lines.append(f"{pad}    {memo}[0] = (deepcopy({value}), bytes(out[{start}:]))")


def schema_json_bytes(schema):
    """The schema as a container file's header holds it."""
    return json.dumps(schema, separators=(",", ":")).encode()


class AvroContainerWriter:
    """Writes records as an Avro object container file (deflate) to a binary `handle`; `close()` ends it.

    `encode` is a `compile_encoder` of `schema`; records must already match the schema. `schema_json`: the
    schema's `schema_json_bytes`, when the caller keeps it (a sink writing many small files: serialising a
    large schema for each header cost more than encoding its records)."""

    def __init__(self, handle, schema, encode, block_bytes=BLOCK_BYTES, level=DEFLATE_LEVEL, schema_json=None):
        self.handle = handle
        self.schema_json = schema_json or schema_json_bytes(schema)
        self.encode = encode
        self.block_bytes = block_bytes
        self.level = level
        self.block = bytearray()
        self.count = 0
        self.sync = None

    def write(self, record):
        self.encode(self.block, record)
        self.block_grew()

    def write_datum(self, datum):
        """Writes a record already encoded (by `encode`, alone)."""
        self.block += datum
        self.block_grew()

    def block_grew(self):
        self.count += 1
        if len(self.block) >= self.block_bytes:
            self.write_block()

    def close(self):
        """Writes what is pending (the header alone for a file of no records)."""
        if self.count:
            self.write_block()
        if self.sync is None:
            self.write_header(hashlib.sha256(self.schema_json).digest()[:SYNC_BYTES])

    def write_block(self):
        if self.sync is None:
            self.write_header(hashlib.sha256(self.schema_json + self.block).digest()[:SYNC_BYTES])
        data = isal_zlib.compress(self.block, self.level, wbits=-15)  # Avro's deflate codec: raw RFC 1951
        self.handle.write(long_bytes(self.count) + long_bytes(len(data)) + data + self.sync)
        self.block = bytearray()
        self.count = 0

    def write_header(self, sync):
        self.sync = sync
        header = bytearray(MAGIC)
        write_long(header, 2)
        for key, value in ((b"avro.codec", b"deflate"), (b"avro.schema", self.schema_json)):
            write_long(header, len(key))
            header += key
            write_long(header, len(value))
            header += value
        header.append(0)
        self.handle.write(bytes(header) + sync)
