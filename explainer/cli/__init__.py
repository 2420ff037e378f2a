"""The `circuits` command line: a thin layer over the library.

Each command parses its options, calls one library function, and prints the result. Mistakes a user
can make (`UserError`) become one line on stderr and exit status 1, never a traceback. The group and
its error handling are in `app`; the commands, by area, in `*_commands`; they are attached here.
"""

from __future__ import annotations

from . import (circuit_commands, demo_commands, eval_commands, explain_commands, model_commands, report_commands,
               search_commands, sql_commands)
from .app import main

for _module in (model_commands, circuit_commands, explain_commands, eval_commands, demo_commands, report_commands,
                search_commands, sql_commands):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
