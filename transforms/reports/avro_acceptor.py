"""A yes/no check of a record against an Avro schema, generated as Python source, for the records that pass.

The path-naming validator of `avro_validation.py` builds a path string for every field it visits and calls a
closure per value: most of the parse stage's time on valid reports (~55 us of ~60 us a contract report).
Nearly every record passes, and a passing record needs no path. So `compile_acceptor` turns the parsed
schema into the source of one plain function per record type, with each field's check inlined as an
expression (~6x faster), and `fast_validator` runs it first: only a record it refuses goes through the
path-naming validator, which raises `InvalidRecord` with the same reason as before. Both follow fastavro's
non-strict rules (absent fields fall back to their defaults, extra fields are ignored);
tests/test_avro_acceptor.py checks that the two agree with each other and with fastavro.
"""
import fastavro

from transforms.reports.avro_validation import INT_RANGE, LONG_RANGE, InvalidRecord, compile_validator

_PRIMITIVE_EXPRESSIONS = {
    "null": "{v} is None",
    "string": "isinstance({v}, str)",
    "boolean": "isinstance({v}, bool)",
    "int": "(isinstance({v}, int) and not isinstance({v}, bool) and %d <= {v} <= %d)" % INT_RANGE,
    "long": "(isinstance({v}, int) and not isinstance({v}, bool) and %d <= {v} <= %d)" % LONG_RANGE,
    "float": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    "double": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
}


class _Generator:
    """Writes the acceptor's module: a function per record and array type, constants for enum symbols."""

    def __init__(self, named):
        self.named = named
        self.functions = {}  # name -> source lines
        self.constants = {}  # name -> value

    def expression(self, schema, value):
        """A boolean expression over the local name `value` that holds when it matches `schema`."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_EXPRESSIONS:
                return _PRIMITIVE_EXPRESSIONS[schema].format(v=value)
            return self.expression(self.named[schema], value)
        if isinstance(schema, list):
            branches = [self.expression(branch, value) for branch in schema]
            return "(" + " or ".join(branches) + ")"
        kind = schema["type"]
        if kind == "record":
            return f"{self.record_function(schema)}({value})"
        if kind == "array":
            return f"{self.array_function(schema)}({value})"
        if kind == "enum":
            symbols = self.constant(f"_symbols_{_identifier(schema['name'])}", frozenset(schema["symbols"]))
            return f"(isinstance({value}, str) and {value} in {symbols})"
        return self.expression(kind, value)

    def constant(self, name, value):
        self.constants[name] = value
        return name

    def record_function(self, schema):
        name = f"_record_{_identifier(schema['name'])}"
        if name in self.functions:
            return name
        self.functions[name] = None  # claimed first, so a recursive type refers to the function being written
        lines = [f"def {name}(record):", "    if not isinstance(record, dict):", "        return False",
                 "    get = record.get"]
        for field in schema["fields"]:
            check = self.expression(field["type"], "value")
            if "default" in field and _admits_null(field["type"]):  # absent reads as None, which passes
                lines += [f"    value = get({field['name']!r})", f"    if not {check}:", "        return False"]
                continue
            lines.append(f"    value = get({field['name']!r}, _ABSENT)")
            if "default" in field:
                lines += [f"    if value is not _ABSENT and not {check}:", "        return False"]
            else:
                lines += [f"    if value is _ABSENT or not {check}:", "        return False"]
        lines.append("    return True")
        self.functions[name] = lines
        return name

    def array_function(self, schema):
        name = f"_array_{len(self.functions)}"
        self.functions[name] = None
        check = self.expression(schema["items"], "item")
        self.functions[name] = [
            f"def {name}(items):", "    if not isinstance(items, list):", "        return False",
            "    for item in items:", f"        if not {check}:", "            return False", "    return True"]
        return name

    def module(self, entry):
        lines = [line for source in self.functions.values() for line in source + [""]]
        return "\n".join(lines + [f"_accept = {entry}"])


def _admits_null(schema):
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _identifier(name):
    return "".join(char if char.isalnum() else "_" for char in name)


def compile_acceptor(schema):
    """A function `accept(record)`: True when `record` matches the Avro `schema`, else False; never raises
    (but RecursionError for a recursive schema nested past Python's limit, like the path-naming validator)."""
    named = {}
    parsed = fastavro.parse_schema(schema, named_schemas=named)
    generator = _Generator(named)
    entry = generator.expression(parsed, "record")
    function = "_entry"
    generator.functions[function] = [f"def {function}(record):", f"    return {entry}"]
    namespace = {"_ABSENT": object(), **generator.constants}
    exec(compile(generator.module(function), f"<acceptor of {parsed.get('name', 'schema')}>", "exec"), namespace)
    return namespace["_accept"]


def fast_validator(schema):
    """A drop-in for `compile_validator(schema)`: `check(record)` raises `InvalidRecord` naming the offending
    field, but only a refused record pays for finding it."""
    accept = compile_acceptor(schema)
    explain = compile_validator(schema)

    def check(record):
        if not accept(record):
            explain(record)
            raise InvalidRecord("$: does not match the schema (the path-naming validator found no field)")

    return check
