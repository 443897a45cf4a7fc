"""Logging for the whole process: one root handler that hides secrets and repeated errors.

The filters sit on the root handler, not on our loggers, so what pypowerwall, urllib3 and
uvicorn log (uvicorn when started with `log_config=None`) passes through them too. A failing
gateway polled every few seconds would otherwise print the same error thousands of times a day.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

from powerwall_service.config import REDACTED, Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPEAT_WINDOW_SECONDS = 300.0
_MAX_TRACKED = 512
_NUMBER = re.compile(r"\d+")


class SecretFilter(logging.Filter):
    """Replaces every secret in a record (message, arguments, exception, stack) by `***`.

    Secrets are also matched as URL-encoded and JSON-escaped text, the forms in which a password
    ends up in a logged URL or request body.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        forms = {form for secret in secrets if secret for form in _encodings(secret)}
        self._forms = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._forms:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info is not None:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _encodings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), json.dumps(secret)[1:-1]}


class RepeatFilter(logging.Filter):
    """Lets a warning or error through once per window; repeats are counted, not printed.

    Lines that differ only in numbers count as the same line. When the line comes back after the
    window, it is printed with how often it was suppressed. Below WARNING nothing is held back:
    DEBUG is for seeing everything.
    """

    def __init__(
        self,
        window: float = REPEAT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()
        # Handler.handle() runs filters outside the handler's lock, from any thread.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        with self._lock:
            return self._first_in_window(record)

    def _first_in_window(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = (record.name, record.levelno, _NUMBER.sub("#", message))
        now = self._clock()
        previous = self._seen.get(key)
        if previous is not None and now - previous[0] < self._window:
            self._seen[key] = (previous[0], previous[1] + 1)
            return False
        if previous is not None and previous[1]:
            record.msg = f"{message} (repeated {previous[1]} times in the last {now - previous[0]:.0f} s)"
            record.args = None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > _MAX_TRACKED:
            self._seen.popitem(last=False)
        return True


def configure_logging(settings: Settings) -> logging.Handler:
    """Route every logger through one stderr handler at PW_LOG_LEVEL; returns that handler."""
    level = logging.getLevelName(settings.pw_log_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(SecretFilter(settings.secrets))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        # pypowerwall calls logging.basicConfig() at import, which may have run before us.
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler
