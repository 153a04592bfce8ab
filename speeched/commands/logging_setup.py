"""One logging setup for every command: speeched's own messages visible, library chatter quiet.

Progress bars belong on a terminal: when stderr is not one (a log file, CI, a pipe), transformers' and
huggingface_hub's bars ("Loading weights", "Writing model shards") are switched off, so logs hold lines,
not carriage-return animations.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    logging.getLogger("speeched").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # lazy: a command imports transformers only once it needs it (`speeched --help` stays fast)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
