"""A fast validator compiled from an Avro schema in `schemas/`.

fastavro's `validate` costs ~770 us per contract report here and its errors name no path; this compiles
the same parsed schema once into straight-line Python (one function, no call per value) that raises
`InvalidRecord` with the path of the first offending field, built only when there is one. Unions of
several types and recursive types go through nested checks (`compile_nested_validator`), which give the
same answers and messages. tests/test_avro_validation.py checks both agree with fastavro and each other.

Unlike fastavro, a float or double must be finite: every record checked here is written as JSON too (route
topics, the agency service, records packed to cross a grouping), and JSON has no NaN or infinity.
"""
import fastavro

INT_RANGE = (-(2**31), 2**31 - 1)
INFINITIES = (float("inf"), float("-inf"))
LONG_RANGE = (-(2**63), 2**63 - 1)


class InvalidRecord(ValueError):
    """A record that does not match its schema; the message names the offending field."""


def compile_validator(schema):
    """A function `check(record)` raising `InvalidRecord` unless `record` matches the Avro `schema`.

    Like fastavro's non-strict validation: absent fields fall back to their defaults and extra fields are
    ignored (producers may add fields before the contract lists them).
    """
    named = {}
    parsed = fastavro.parse_schema(schema, named_schemas=named)
    return _CheckSource(named).compile(parsed)


def compile_nested_validator(schema):
    """`compile_validator` as nested checks, a call per value: what the straight-line one falls back on."""
    named = {}
    parsed = fastavro.parse_schema(schema, named_schemas=named)
    check = _compile(parsed, named)
    return lambda record: check(record, "$")


_MISSING = object()


class _CheckSource:
    """Python source of one check function; `path` arguments are f-string bodies (indices filled in only
    when a message is made)."""

    def __init__(self, named):
        self.named = named
        self.constants = {"InvalidRecord": InvalidRecord, "MISSING": _MISSING, "short": _short, "position": _position,
                          "INFINITIES": INFINITIES}
        self.inlining = []
        self.variables = 0

    def compile(self, parsed):
        lines = ["def check(record):"]
        self.value(parsed, "record", "$", lines, 1)
        lines.append("    return None")
        namespace = dict(self.constants)
        exec(compile("\n".join(lines), "<avro validator>", "exec"), namespace)  # noqa: S102 - our own source
        return namespace["check"]

    def variable(self, stem):
        self.variables += 1
        return f"{stem}{self.variables}"

    def constant(self, value):
        name = self.variable("C")
        self.constants[name] = value
        return name

    @staticmethod
    def fail(pad, path, message):
        """The statement raising `InvalidRecord` with `path` (an f-string body) and `message` (one too)."""
        return f"{pad}raise InvalidRecord(f{(path + message)!r})"

    def value(self, schema, name, path, lines, depth):
        pad = "    " * depth
        if isinstance(schema, str):
            return self.named_or_primitive(schema, name, path, lines, depth)
        if isinstance(schema, list):
            others = [branch for branch in schema if branch != "null"]
            if "null" in schema and len(others) == 1:
                lines.append(f"{pad}if {name} is not None:")
                lines.append(f"{pad}    pass")
                return self.value(others[0], name, path, lines, depth + 1)
            return self.nested(schema, name, path, lines, depth)
        kind = schema["type"]
        if kind == "record":
            return self.record(schema, name, path, lines, depth)
        if kind == "array":
            item = self.variable("item")
            lines += [f"{pad}if not isinstance({name}, list):",
                      self.fail(pad + "    ", path, f": expected a list, got {{type({name}).__name__}}"),
                      f"{pad}for {item} in {name}:"]
            return self.value(schema["items"], item, f"{path}[{{position({name}, {item})}}]", lines, depth + 1)
        if kind == "enum":
            symbols = self.constant(frozenset(schema["symbols"]))
            listing = ", ".join(schema["symbols"]).replace("{", "{{").replace("}", "}}")
            lines += [f"{pad}if not isinstance({name}, str) or {name} not in {symbols}:",
                      self.fail(pad + "    ", path, f": {{short({name})}} is not one of {listing}")]
            return None
        if kind in _PRIMITIVES:
            return self.named_or_primitive(kind, name, path, lines, depth)
        return self.nested(schema, name, path, lines, depth)

    def named_or_primitive(self, kind, name, path, lines, depth):
        pad = "    " * depth
        got = f"got {{type({name}).__name__}}"
        if kind == "null":
            lines += [f"{pad}if {name} is not None:", self.fail(pad + "    ", path, ": expected null")]
        elif kind == "string":
            lines += [f"{pad}if not isinstance({name}, str):", self.fail(pad + "    ", path, f": expected a string, {got}")]
        elif kind == "boolean":
            lines += [f"{pad}if not isinstance({name}, bool):", self.fail(pad + "    ", path, f": expected a boolean, {got}")]
        elif kind in ("int", "long"):
            low, high = INT_RANGE if kind == "int" else LONG_RANGE
            lines += [f"{pad}if isinstance({name}, bool) or not isinstance({name}, int):",
                      self.fail(pad + "    ", path, f": expected an {kind}, {got}"),
                      f"{pad}if not {low} <= {name} <= {high}:",
                      self.fail(pad + "    ", path, f": {{{name}}} is out of range for an Avro {kind}")]
        elif kind in ("float", "double"):
            lines += [f"{pad}if isinstance({name}, bool) or not isinstance({name}, (int, float)):",
                      self.fail(pad + "    ", path, f": expected a number, {got}"),
                      f"{pad}if {name} != {name} or {name} in INFINITIES:",
                      self.fail(pad + "    ", path, f": {{{name}}} is not a finite number")]
        elif kind in self.named and kind not in self.inlining:
            self.inlining.append(kind)
            self.value(self.named[kind], name, path, lines, depth)
            self.inlining.pop()
        else:  # a type that contains itself
            self.nested(kind, name, path, lines, depth)

    def nested(self, schema, name, path, lines, depth):
        check = self.constant(_compile(schema, self.named))
        lines.append(f"{'    ' * depth}{check}({name}, f{path!r})")

    def record(self, schema, name, path, lines, depth):
        pad = "    " * depth
        lines += [f"{pad}if not isinstance({name}, dict):",
                  self.fail(pad + "    ", path, f": expected an object, got {{type({name}).__name__}}")]
        for field in schema["fields"]:
            value = self.variable("field")
            field_path = f"{path}.{field['name']}"
            if field.get("default", _MISSING) is None and _is_optional(field["type"]):
                # absent or null, both valid: one test (`value` below tests `is not None` first)
                lines.append(f"{pad}{value} = {name}.get({field['name']!r})")
                self.value(field["type"], value, field_path, lines, depth)
                continue
            lines.append(f"{pad}{value} = {name}.get({field['name']!r}, MISSING)")
            if "default" in field:
                lines.append(f"{pad}if {value} is not MISSING:")
            else:
                lines += [f"{pad}if {value} is MISSING:", self.fail(pad + "    ", field_path, ": required field is missing"),
                          f"{pad}else:"]
            lines.append(f"{pad}    pass")
            self.value(field["type"], value, field_path, lines, depth + 1)


def _is_optional(schema):
    """A `["null", X]` union, which the straight-line check tests with `is not None` before X."""
    return isinstance(schema, list) and "null" in schema and len(schema) == 2


def _compile(schema, named):
    if isinstance(schema, str):
        return _compile_name(schema, named)
    if isinstance(schema, list):
        return _compile_union(schema, named)
    kind = schema["type"]
    if kind == "record":
        return _compile_record(schema, named)
    if kind == "array":
        return _compile_array(schema, named)
    if kind == "enum":
        return _compile_enum(schema)
    return _compile(kind, named)


def _compile_name(name, named):
    primitive = _PRIMITIVES.get(name)
    if primitive:
        return primitive
    compiled = []

    def check_named(value, path):
        if not compiled:  # compiled on first use, so recursive types terminate
            compiled.append(_compile(named[name], named))
        compiled[0](value, path)

    return check_named


def _check_null(value, path):
    if value is not None:
        raise InvalidRecord(f"{path}: expected null")


def _check_string(value, path):
    if not isinstance(value, str):
        raise InvalidRecord(f"{path}: expected a string, got {type(value).__name__}")


def _check_boolean(value, path):
    if not isinstance(value, bool):
        raise InvalidRecord(f"{path}: expected a boolean, got {type(value).__name__}")


def _integer_check(kind, bounds):
    low, high = bounds

    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRecord(f"{path}: expected an {kind}, got {type(value).__name__}")
        if not low <= value <= high:
            raise InvalidRecord(f"{path}: {value} is out of range for an Avro {kind}")

    return check


def _check_number(value, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"{path}: expected a number, got {type(value).__name__}")
    if value != value or value in INFINITIES:
        raise InvalidRecord(f"{path}: {value} is not a finite number")


_PRIMITIVES = {
    "null": _check_null,
    "string": _check_string,
    "boolean": _check_boolean,
    "int": _integer_check("int", INT_RANGE),
    "long": _integer_check("long", LONG_RANGE),
    "float": _check_number,
    "double": _check_number,
}


def _compile_record(schema, named):
    fields = [(field["name"], "default" in field, _compile(field["type"], named)) for field in schema["fields"]]

    def check(value, path):
        if not isinstance(value, dict):
            raise InvalidRecord(f"{path}: expected an object, got {type(value).__name__}")
        for name, has_default, check_field in fields:
            if name in value:
                check_field(value[name], f"{path}.{name}")
            elif not has_default:
                raise InvalidRecord(f"{path}.{name}: required field is missing")

    return check


def _compile_array(schema, named):
    check_item = _compile(schema["items"], named)

    def check(value, path):
        if not isinstance(value, list):
            raise InvalidRecord(f"{path}: expected a list, got {type(value).__name__}")
        for index, item in enumerate(value):
            check_item(item, f"{path}[{index}]")

    return check


def _compile_enum(schema):
    symbols = frozenset(schema["symbols"])
    listing = ", ".join(schema["symbols"])

    def check(value, path):
        if not isinstance(value, str) or value not in symbols:
            raise InvalidRecord(f"{path}: {_short(value)} is not one of {listing}")

    return check


def _compile_union(branches, named):
    nullable = "null" in branches
    others = [_compile(branch, named) for branch in branches if branch != "null"]
    if nullable and len(others) == 1:
        (only,) = others

        def check_optional(value, path):
            if value is not None:
                only(value, path)

        return check_optional

    def check(value, path):
        if value is None and nullable:
            return
        errors = []
        for branch in others:
            try:
                branch(value, path)
                return
            except InvalidRecord as error:
                errors.append(str(error))
        raise InvalidRecord(errors[0] if len(errors) == 1 else f"{path}: matches no allowed type")

    return check


def _position(items, item):
    """Where `item` is in `items`, for a message: the first place holding that very object. The checks are
    pure, so had the object been at an earlier place, that place would have failed first. (Loops without
    `enumerate` save a tenth of a report's check.)"""
    return next(index for index, each in enumerate(items) if each is item)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
