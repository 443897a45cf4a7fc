"""Why a poll of the gateway produced no reading, as types a caller can act on.

pypowerwall reports most failures as `None` or zeros; the gateway client turns each into one
of these, with a message that says what happened and what to check. Nothing here is retried by
the exception itself: the client decides when to ask the gateway again.
"""

from __future__ import annotations

from datetime import datetime


class PowerwallError(Exception):
    """A poll failed; the message is one line a user can act on."""


class PowerwallUnavailableError(PowerwallError):
    """The gateway could not be reached, or answered with an HTTP error (`status`, when known)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PowerwallAuthError(PowerwallError):
    """The gateway refused the credentials; `setting` names the one to check.

    `login_refused` is true when the login itself was refused (the client then waits before the
    next login, so a wrong password does not lock the user out); false when the login worked but
    a data request was still refused.
    """

    def __init__(
        self, message: str, setting: str, status: int | None = None, login_refused: bool = True
    ) -> None:
        super().__init__(message)
        self.setting = setting
        self.status = status
        self.login_refused = login_refused


class PowerwallRateLimitedError(PowerwallError):
    """The gateway answered 429; no request is sent before `retry_at` (UTC)."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class PowerwallTimeoutError(PowerwallError):
    """The poll did not finish within PW_REQUEST_TIMEOUT, or earlier calls are still stuck."""


class PowerwallDataError(PowerwallError):
    """The gateway answered, but without the core values (malformed or incomplete data)."""
