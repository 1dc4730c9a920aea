"""admin: the commands that edit msa's files, apart from the daemon
(DESIGN.md: `server/` is the daemon's I/O and nothing else).

`usercmd`: `msa.py user ...`; `dkimcmd`: `msa.py dkim keygen|dns`;
`pgpcmd`: `msa.py pgp keygen|export`; `check`: `msa.py check`. They read
the configuration and the files through `server.config` and
`server.files`, so that they judge a file exactly as the daemon will.
"""
