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
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "the file"
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{where}: {field}: {msg}" + (f"; {fix}" if fix else "")) from None
