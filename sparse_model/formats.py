"""The one way every file the tool reads from outside is checked: a pydantic model per format, and
a bad value becomes one `UserError` line naming the file and the field, never a traceback."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import UserError

M = TypeVar("M")


def checked(model: type[M] | TypeAdapter, data: Any, where: str, fix: str = "") -> M:
    """`data` validated as `model` (a pydantic model class or a TypeAdapter). `where` names the
    file (and the part of it); `fix` says what to do, appended to the message."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        assert issubclass(model, BaseModel)
        return model.model_validate(data)
    except ValidationError as e:
        loc, msg = _one_error(e.errors(), data)
        field = ".".join(str(x) for x in loc) or "the file"
        raise UserError(f"{where}: {field}: {msg}" + (f"; {fix}" if fix else "")) from None


def _one_error(errors: list, data: Any) -> tuple[list, str]:
    """The error to show, with its location as the user wrote it. A value of a union type (a string
    or a list, say) fails once per alternative: of the first failing value's errors, the deepest
    wins, then one that is not a plain wrong-type error, since that alternative matched the input's
    shape and its error names the real problem."""
    found = [(_user_loc(err, data), err) for err in errors]
    first = found[0][0]
    same = [(loc, err) for loc, err in found if loc[:len(first)] == first]
    loc, err = max(same, key=lambda f: (len(f[0]), not f[1]["type"].endswith("_type")))  # max: first of ties
    return loc, err["msg"].removeprefix("Value error, ")


def _user_loc(err: dict, data: Any) -> list:
    """`err`'s location without pydantic's own steps (union alternatives such as "str" or
    "constrained-str", "[key]"): only keys and indexes found by walking the input."""
    loc, node, steps = [], data, list(err["loc"])
    for i, step in enumerate(steps):
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, (list, tuple)) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        elif err["type"] == "missing" and i == len(steps) - 1:
            pass  # the missing key itself
        else:
            continue
        loc.append(step)
    return loc
