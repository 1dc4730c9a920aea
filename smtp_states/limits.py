"""Every protocol bound of the SMTP core, each with its source.

Nothing here is configurable per site: the site's own limits (message size,
recipients, timeouts) live in the configuration and reach the core through
`Settings`.
"""

#: RFC 5321 §4.5.3.1.4 allows 512 octets for a command line; ESMTP
#: parameters (SIZE, BODY, SMTPUTF8, AUTH=) need more, so msa allows 2048
#: with the line ending (SPEC.md S-102).
MAX_COMMAND_LINE = 2048

#: RFC 4954 §4: an AUTH response line may be up to 12288 octets; an AUTH
#: command carrying an initial response gets the same room (S-102).
MAX_AUTH_LINE = 12288

#: Unanswered pipelined input held while the core waits on a decision
#: (RFC 2920; S-105). The shell stops reading beyond it.
MAX_PENDING_INPUT = 64 * 1024

#: Protocol errors (500-504, 530, 550-555 replies to commands) before the
#: session is cut (S-106); Postfix's smtpd_hard_error_limit is 20, chasquid
#: uses 3.
MAX_ERRORS = 10

#: Junk commands (NOOP, RSET, VRFY, HELP) before each further one counts as
#: an error (S-106): Postfix's smtpd_junk_command_limit, 100.
MAX_JUNK_COMMANDS = 100

#: Messages in one session before 421 (S-207); git send-email sends long
#: patch series over one session.
MAX_MESSAGES = 1000

#: RFC 5321 §4.5.3.1.1-3: local part, domain and path lengths (S-206).
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

#: Reply lines are at most 512 octets with CRLF (RFC 5321 §4.5.3.1.5).
MAX_REPLY_LINE = 512

# -- the client role: msa speaking SMTP to its MTA (client.py, S-806) ----------

#: RFC 5321 §4.5.3.1.4: a command line msa sends is at most 512 octets where
#: it can choose (XFORWARD is split to stay within it, as Postfix's
#: XFORWARD_README asks).
MAX_CLIENT_COMMAND = 512

#: A reply line from the MTA: RFC 5321 §4.5.3.1.5 allows 512 octets; msa
#: takes up to 4096 so that a chatty MTA still works, and calls anything
#: longer a broken connection.
MAX_MTA_REPLY_LINE = 4096

#: Lines in one reply (an EHLO reply has a dozen or two).
MAX_MTA_REPLY_LINES = 256
