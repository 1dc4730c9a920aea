"""The sendmail hand-off (SPEC.md §8, CONTRACT.md "Handing mail to the MTA").

`<sendmail> -i -f SENDER -- RCPT...` with the message's parts (the fixed
header, then the body from the spool) on standard input. No shell,
close_fds, a new process group, a reduced environment; the process group
is killed at the timeout. The exit status is mapped to a reply here; the
caller removes the spool file.
"""

from __future__ import annotations

from typing import Any

from smtp_states import Reply
from smtp_states import replies as R

from . import child
from .child import ENV  # noqa: F401  (S-801: the environment sendmail gets)
from .handoff import HandOff, Outbound, Part

STDERR_KEEP = 512

# S-803: sysexits that mean a permanent problem, as Postfix maps them.
_PERMANENT: dict[int, tuple[int, str]] = {
    67: (550, "5.1.1"),  # EX_NOUSER
    68: (550, "5.1.2"),  # EX_NOHOST
    65: (554, "5.6.0"),  # EX_DATAERR
    77: (550, "5.7.0"),  # EX_NOPERM
    78: (554, "5.3.5"),  # EX_CONFIG
    **{code: (554, "5.3.0") for code in (64, 66, 69, 70, 72, 73, 74, 76)},
}


class SendmailHandoff:
    """`handoff = sendmail` (the default): one process per message."""

    def __init__(self, sendmail: tuple[str, ...], affinity: Any = None) -> None:
        self.sendmail = sendmail
        self.affinity = affinity

    def deliver(self, out: Outbound, timeout: float) -> HandOff:
        env = out.envelope
        return hand_off(argv_for(self.sendmail, env.sender, env.recipients), out.parts, timeout, self.affinity)

    def close(self) -> None:
        pass


def argv_for(sendmail: tuple[str, ...], sender: str, recipients: tuple[str, ...]) -> list[str]:
    """S-801: `--` always before the recipients; `<>` for the null sender."""
    return [*sendmail, "-i", "-f", sender or "<>", "--", *recipients]


def _reply_for(status: int) -> tuple[Reply | None, str]:
    if status == 0:
        return None, "sent"
    if status in _PERMANENT:
        code, enhanced = _PERMANENT[status]
        return R.sendmail_rejected(code, enhanced, status), "bounced"
    return R.HANDOFF_TEMPFAIL, "deferred"  # 75, 71, anything else (S-803)


def hand_off(argv: list[str], parts: tuple[Part, ...], timeout: float, affinity: Any = None) -> HandOff:
    """Run sendmail, feed it the message's parts, collect its exit status
    and the start of its standard error, all within `timeout` (the child's
    poll loop is delivery/child.py's)."""
    done = child.run(argv, parts, timeout, stderr_limit=STDERR_KEEP, affinity=affinity)
    if isinstance(done, OSError):  # S-804
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"cannot run {argv[0]}: {done.strerror or done}")
    stderr, elapsed = done.stderr, done.elapsed
    if done.status is None:
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"timeout after {timeout:g}s", stderr, elapsed)
    if done.status < 0:
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"killed by signal {-done.status}", stderr, elapsed)
    reply, kind = _reply_for(done.status)
    return HandOff(reply, kind, f"exit {done.status}", stderr, elapsed)
