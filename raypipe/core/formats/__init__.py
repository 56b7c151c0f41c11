"""Input formats: how a row of a dataset becomes one or more normalised records (raypipe.core.schema).

A format scores how well a file's fields fit it (`detect`: 0 = not at all, more = more specific) and finds each
trajectory of a row (`parts`); the record assembly (reference, source, id, markup split, meta) is shared. A format
may also offer a columnar fast path for whole tables (`normalize_table`; None hands the table to the row path).
Register a new one with `@FORMATS.register("name")`; `--format name` selects it, else the best fit is detected.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Iterable

import pyarrow as pa
from pydantic import AfterValidator, BeforeValidator

from raypipe.core.errors import LayoutError, RowError
from raypipe.core.registry import Registry
from raypipe.core.schema import ANY_SOURCE, Parts, make_record


class InputFormat:
    name: ClassVar[str]
    description: ClassVar[str]  # the fields a row of this format has (for errors about unknown layouts)
    requires_thinking: ClassVar[bool] = False  # an empty reasoning is a defect of the row, not a short answer
    fixed_markup: ClassVar[str | None] = None  # every response uses this markup (a response without it is unfinished)
    # The fields `detect` asks for, one of each group; only for the message about a file that fits no format (its
    # nearest formats and what they miss). Left empty where detect asks for more than field names.
    needs: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def __init__(self, options: dict[str, str] | None = None):
        self.options = options or {}

    @classmethod
    def detect(cls, keys: set[str]) -> int:
        """How specifically the fields fit this format: 0 not at all; generic layouts 1-2; a dataset's own 5+.
        `keys` holds the field names and, where a row is at hand, nested paths (`messages[].info.source`)."""
        return 0

    def parts(self, row: dict) -> Parts | list[Parts]:
        """The trajectory (or trajectories) of one row; RowError when the row cannot be read."""
        raise NotImplementedError

    def records(self, row: Any, default_source: str, shard: str, index: int,
                expected_markup: dict[str, str] | None = None) -> list[dict]:
        """Every record of one row; RowError for a row that cannot be used (one reject)."""
        if not isinstance(row, dict):
            raise RowError(f"record is a {type(row).__name__}, not an object")
        got = self.parts(row)
        parts = got if isinstance(got, list) else [got]
        if not parts:
            raise RowError("the row holds no trajectory")
        if self.fixed_markup:
            expected_markup = {ANY_SOURCE: self.fixed_markup}
        return [make_record(row, p, self.name, default_source, shard, index, k, expected_markup)
                for k, p in enumerate(parts)]

    def normalize(self, row: Any, default_source: str, shard: str, index: int,
                  expected_markup: dict[str, str] | None = None) -> dict:
        """The one record of a single-trajectory row (the online scorer's and the graders' rows)."""
        got = self.records(row, default_source, shard, index, expected_markup)
        if len(got) != 1:
            raise RowError(f"the row holds {len(got)} trajectories; send one")
        return got[0]

    def normalize_table(self, table: pa.Table, default_source: str, shard: str) -> tuple[pa.Table, list[dict]] | None:
        """(records, rejects) for a whole table without a Python dict per row, or None: use the row path."""
        return None


FORMATS: Registry[InputFormat] = Registry("input format")
MAPPED = ("problem", "response", "thinking", "answer", "id", "source")


def _mapping(value: Any) -> dict[str, str] | None:
    """`problem=PATH,response=PATH,...` (a flag) or a mapping (YAML) to {name: path}."""
    if value is None or isinstance(value, dict):
        return value
    pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--fields takes name=PATH pairs separated by commas, got {value!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _check_mapping(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None:
        unknown = sorted(set(value) - set(MAPPED))
        if unknown or not {"problem", "response"} <= set(value):
            raise ValueError(f"--fields maps {', '.join(MAPPED)} to paths, problem and response at least; got "
                             f"{sorted(value)}")
    return value


FieldMapping = Annotated[dict[str, str], BeforeValidator(_mapping), AfterValidator(_check_mapping)]


def field_paths(fields: Iterable[str]) -> set[str]:
    """What a format's `detect` sees: the row's field names and, where the row itself is at hand (a row, or its
    `.keys()` view), the paths into its nested objects two levels deep: `a.b` into a struct, `a[].b` into a list of
    structs (`messages[].info.reference_answer`). Keys count whatever their value, null included."""
    names = set(fields)
    row = fields if isinstance(fields, Mapping) else getattr(fields, "mapping", None)
    if row is not None:
        for k, v in row.items():
            _nested(str(k), v, names, 2)
    return names


def _nested(path: str, value: Any, out: set[str], depth: int) -> None:
    if depth == 0:
        return
    items, path = (value[:8], f"{path}[]") if isinstance(value, list) else ([value], path)
    for item in items:
        if isinstance(item, Mapping):
            for k, v in item.items():
                out.add(f"{path}.{k}")
                _nested(f"{path}.{k}", v, out, depth - 1)


def fits(keys: Iterable[str]) -> list[tuple[str, int]]:
    """(format, score) of every format the fields (or a row: see field_paths) fit, best first."""
    keys = field_paths(keys)
    scored = [(name, fmt.detect(keys)) for name, fmt in FORMATS.items()]
    return sorted([x for x in scored if x[1] > 0], key=lambda x: -x[1])


def detect_format(keys: Iterable[str]) -> str:
    """The format that fits the fields (or a row) best; LayoutError when none does, or when two fit equally well."""
    found = fits(keys)
    keys = set(keys)
    if not found:
        raise LayoutError(unknown_layout(keys))
    best = [name for name, score in found if score == found[0][1]]
    if len(best) > 1:
        raise LayoutError(f"ambiguous record layout: fields {sorted(keys)} fit the formats {', '.join(best)} "
                          "equally well; choose one with --format")
    return best[0]


def unknown_layout(keys: set[str], shown: int = 12) -> str:
    """One short line for fields that fit no format: the fields, the nearest formats and what they miss (not every
    format), and the way out."""
    names = sorted(k for k in keys if "." not in k and "[" not in k)
    fields = ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
    near = []
    for name, fmt in FORMATS.items():
        missing = [g for g in fmt.needs if not keys & set(g)]
        if fmt.needs and len(missing) < len(fmt.needs):
            near.append((len(missing), -(len(fmt.needs) - len(missing)), name, missing))
    if near:
        near.sort(key=lambda x: x[:2])
        best = [x for x in near if x[:2] == near[0][:2]][:2]
        hint = "nearest: " + " or ".join(f"{name} (missing {' and '.join('|'.join(g) for g in missing)})"
                                       for _, _, name, missing in best)
    else:
        hint = "expected e.g. " + ", ".join(f"{' + '.join('|'.join(g) for g in fmt.needs)} ({name})"
                                            for name, fmt in FORMATS.items() if fmt.needs and _generic(fmt))
    return (f"unknown record layout: fields [{fields}]; {hint}; map them with --fields problem=PATH,response=PATH "
            "or choose a --format")


def _generic(fmt: type[InputFormat]) -> bool:
    """A layout of no one dataset (detect scores it 1-2 when its fields are there)."""
    return 0 < fmt.detect({g[0] for g in fmt.needs}) <= 2


def schema_paths(schema: pa.Schema, depth: int = 2) -> set[str]:
    """What a format's `detect` sees of a Parquet file from its schema alone (the footer): the column names and the
    paths into their structs and lists of structs, as field_paths gives them for a row."""
    out: set[str] = set()

    def walk(path: str, t: pa.DataType, left: int) -> None:
        if left == 0:
            return
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            path, t = f"{path}[]", t.value_type
        if pa.types.is_struct(t):
            for f in t:
                out.add(f"{path}.{f.name}")
                walk(f"{path}.{f.name}", f.type, left - 1)

    for f in schema:
        out.add(f.name)
        walk(f.name, f.type, depth)
    return out


def make_format(name: str | None, fields: dict[str, str] | None = None) -> InputFormat | None:
    """The format a job reads with: a field mapping, a named format, or None (detect it per file)."""
    if fields:
        return FORMATS.create("fields", fields)
    return FORMATS.create(name) if name else None


def normalize_row(row: Any, layout: str, default_source: str, shard: str, index: int,
                  expected_markup: dict[str, str] | None = None) -> dict:
    return FORMATS.create(layout).normalize(row, default_source, shard, index, expected_markup)


from raypipe.core.formats import generic  # noqa: E402,F401  (registers the formats, in detection order)
from raypipe.core.formats import datasets, nemotron  # noqa: E402,F401  (the public datasets' own layouts)
