"""One error convention for every command.

A `SpeechedError` is a problem the *user* can cause (bad recipe, missing file, wrong option). The CLI
prints it as one line, ``speeched <command>: <message>``, and exits with its `exit_code`; no traceback
unless ``--debug`` or ``SPEECHED_DEBUG=1`` asks for one (for bug reports). Anything else is a bug and
keeps its traceback.

Exit codes, one rule everywhere:
  0  everything asked for was done
  1  some inputs failed; they were reported (bad_audio.jsonl, the message) and the rest was done
  2  usage or configuration error: nothing (or nothing more) was done; fix the input and rerun
  130 interrupted (Ctrl-C); what was saved is named in the message
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 some inputs failed and were reported; 2 usage or configuration error. "
    "Set SPEECHED_DEBUG=1 (or pass --debug) to see tracebacks."
)


class SpeechedError(Exception):
    """A user-caused error: printed as one line, exit code `exit_code` (2 unless said otherwise)."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SpeechedError):
    """Bad options, bad paths, bad configuration: exit 2."""


class PartialFailure(SpeechedError):
    """Some inputs failed and were reported; the rest is done: exit 1."""

    exit_code = EXIT_PARTIAL


def debug_enabled() -> bool:
    return os.environ.get("SPEECHED_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
