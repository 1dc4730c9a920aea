"""admin: the commands that edit msa's files, apart from the daemon
(DESIGN.md: `server/` is the daemon's I/O and nothing else).

`usercmd`: `msa.py user ...`; `dkimcmd`: `msa.py dkim keygen|dns`;
`pgpcmd`: `msa.py pgp keygen|export`; `check`: `msa.py check`. They read
the configuration and the files through `server.config` and
`server.files`, so that they judge a file exactly as the daemon will.
"""

from __future__ import annotations

import argparse


def config_option() -> argparse.ArgumentParser:
    """A parent parser of `-c CONF` for sub-commands, so that CONTRACT.md's
    `msa.py pgp keygen USER -c CONF` works as well as `msa.py pgp -c CONF
    keygen USER`; SUPPRESS keeps the value given before the sub-command."""
    location = argparse.ArgumentParser(add_help=False)
    location.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="CONF", help="configuration file")
    return location
