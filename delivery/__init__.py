"""From DataEnd to the MTA (DESIGN.md "Layout", "The message pipeline and
the hand-offs"): the message in progress (`message`), its spool files
(`spool`), the transforms in S-1101's order (`pipeline`: PGP/MIME through
the SOP driver `pgp`, Hashcash through the minter `stamps`, DKIM with the
keys of `dkim_keys`), the children fed from the spool (`child`) and the
host's slots that bound them (`slots`), and the hand-off: one interface
(`handoff`) and two kinds (`sendmail`, `smtp`).

Nothing here imports server/, directory/ or state/: what a message needs of
the daemon (its configuration, CPU affinity, ids, slots, the hand-off) is
passed in. Modules are imported when first used, so that inetd mode
greets before paying for them.
"""

from __future__ import annotations

# typing itself is not imported: inetd mode would pay for it before its greeting
# (TYPE_CHECKING as a plain False, the idiom of PEP 781; type checkers read it as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def make_handoff(config: Any, affinity: Any = None) -> Any:
    """The hand-off kind `config.handoff` names (delivery.handoff.Kind).
    `affinity` (server/affinity.py) lets sendmail run on every core."""
    if config.handoff is None:
        from .sendmail import SendmailHandoff

        return SendmailHandoff(config.sendmail, affinity)
    from .smtp import SmtpHandoff

    return SmtpHandoff(config.handoff.host, config.handoff.port, config.hostname)
