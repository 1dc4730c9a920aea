"""admin: the commands that edit msa's files, apart from the daemon
(DESIGN.md: `server/` is the daemon's I/O and nothing else).

`dkimcmd`: `msa.py dkim keygen|dns`. (`user` and `check` join it with the
accounts work.)
"""
