"""`msa.py check`: every problem as `FILE:LINE: message` (or `KEY:`), exit 1
when any, 0 otherwise; warnings are printed but do not fail. Never a
traceback (CONTRACT.md)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from typing import TextIO

from server import config as config_mod
from delivery import spool
from server import runtime


def run(path: str, out: TextIO) -> int:
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as e:
        for p in e.problems:
            print(p, file=out)
        return 1
    problems: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []  # what is in force, for the record (no effect on the exit status)

    try:
        import argon2  # noqa: F401
    except ImportError:
        problems.append("argon2: the argon2-cffi module is missing (Debian: apt install python3-argon2)")

    if cfg.tls_cert and cfg.tls_key:
        try:
            runtime.tls_context(cfg)
        except runtime.StartupError as e:
            problems.extend(e.problems)
        _readable_by_all(cfg.tls_key, warnings)
        if cfg.run_as and os.getuid() == 0:
            warnings.append(f"{cfg.where('tls_key')}: a certificate reload after run_as needs {cfg.tls_key} readable by {cfg.run_as}")
    else:
        warnings.append(f"{cfg.path}: no tls_cert/tls_key: STARTTLS is not offered and no one can authenticate")

    db = None
    try:
        import sasl

        db = runtime.load_users(cfg, warnings.append)
        _readable_by_all(cfg.users, warnings)
        odd = sasl.nondefault_params(db)
        if odd:
            warnings.append(f"{cfg.users}: argon2 parameters differ from the defaults for {', '.join(odd)}; their login time differs until `msa.py user passwd` rehashes them (S-510)")
    except ImportError:
        pass  # reported above
    except sasl.UserDBError as e:
        problems.extend(e.problems)

    _check_apps(cfg, db, problems, warnings)
    _check_directories(cfg, problems, warnings)

    if cfg.dkim_keys is not None:
        _check_dkim(cfg, problems, warnings, notes)

    if cfg.pgp_keys is not None:
        _check_pgp(cfg, db, problems, warnings, notes)

    if cfg.handoff is not None:
        _check_smtp_handoff(cfg, problems, warnings)
    else:
        prog = cfg.sendmail[0] if cfg.sendmail else ""
        found = prog if os.path.isabs(prog) else shutil.which(prog, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            problems.append(f"{cfg.where('sendmail')}: sendmail: {prog} is not an executable file")
        elif os.getuid() == 0 and not cfg.run_as:
            warnings.append(f"{cfg.where('run_as')}: serve would run {prog} as root; set run_as (S-1012)")
        if found and os.path.isfile(found):
            _check_mta(cfg, found, warnings)

    parent = cfg.spool if os.path.isdir(cfg.spool) else os.path.dirname(cfg.spool)
    if why := spool.problem(cfg.spool):
        problems.append(f"{cfg.where('spool')}: spool: {why}")
    elif not os.access(parent, os.W_OK):
        warnings.append(f"{cfg.where('spool')}: spool: {parent} is not writable by this user")

    _check_state(cfg, problems, warnings)
    _check_workers(cfg, warnings, notes)
    if cfg.state != "sqlite":
        _check_redis(cfg, problems, warnings)

    if cfg.metrics_listen is not None:
        _check_metrics(cfg, problems, warnings, notes)

    if cfg.run_as:
        import pwd

        try:
            pwd.getpwnam(cfg.run_as)
        except (KeyError, ValueError):  # ValueError: a NUL (config refuses it first)
            problems.append(f"{cfg.where('run_as')}: run_as: no such user {cfg.run_as!r}")

    for n in notes:
        print(n, file=out)
    for w in warnings:
        print(f"warning: {w}", file=out)
    for p in problems:
        print(p, file=out)
    return 1 if problems else 0


def _check_workers(cfg: config_mod.Config, warnings: list[str], notes: list[str]) -> None:
    """S-1601: how many processes `workers` means here, when it is set."""
    if "workers" not in cfg.lines:
        return
    n = cfg.worker_count()
    auto = " (auto: one per CPU this process may run on)" if cfg.workers == "auto" else ""
    notes.append(f"{cfg.where('workers')}: serve runs {n} worker process{'es' if n != 1 else ''}{auto}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return
    if n > cpus:
        warnings.append(f"{cfg.where('workers')}: workers = {n}, but this process may run on {cpus} CPU(s): "
                        "the extra processes cost memory and add no throughput")  # fmt: skip


def _check_directories(cfg: config_mod.Config, problems: list[str], warnings: list[str]) -> None:
    """S-1302: the Dovecot handshake; S-1303: the SQL file, its driver and
    each query, run once with a name that cannot exist."""
    if cfg.auth_dovecot:
        from directory.dovecot import DovecotDirectory

        dovecot = DovecotDirectory(cfg.auth_dovecot, warn=lambda _: None, info=lambda _: None,
                                   timeout=cfg.auth_dovecot_timeout)
        try:
            if why := dovecot.check():
                problems.append(f"{cfg.where('auth_dovecot')}: auth_dovecot: {why}")
        finally:
            dovecot.close()
    if cfg.sql:
        from directory import sql, sqlfile

        try:
            settings = sql.load(cfg.sql)
        except sql.SqlConfigError as e:
            problems.extend(e.problems)
            return
        if why := sqlfile.mode_problem(cfg.sql):
            warnings.append(why)
        problems.extend(sql.check(settings))


def _check_apps(cfg: config_mod.Config, db: object, problems: list[str], warnings: list[str]) -> None:
    """S-515: the app passwords file parses; its users exist; its senders
    stay within their users' (else they never match: a warning)."""
    from sasl import apppass

    if not cfg.app_passwords or not os.path.lexists(cfg.app_passwords):
        return
    try:
        apps = runtime.load_apps(cfg)
    except apppass.AppPasswordError as e:
        problems.extend(e.problems)
        return
    _readable_by_all(cfg.app_passwords, warnings)
    if db is not None:
        warnings.extend(apppass.unknown_users(apps, db))  # type: ignore[arg-type]
        warnings.extend(apppass.sender_problems(apps, db))  # type: ignore[arg-type]


#: The first octets of every SQLite 3 database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_state(cfg: config_mod.Config, problems: list[str], warnings: list[str]) -> None:
    """S-1202: serve starts with an unusable state_dir (and warns), but
    check fails naming it; its files are private (0600, never a symbolic
    link), so one readable by others is a warning. Nothing is created
    here: files check made as root would not be writable by run_as."""
    from state.sqlite import FILENAME, FILES, SECRET_FILENAME

    where = f"{cfg.where('state_dir')}: state_dir"
    directory = cfg.state_dir
    if not os.path.exists(directory):
        parent = os.path.dirname(directory) or "."
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            problems.append(f"{where}: {directory} does not exist and {parent} is not a writable directory")
        return
    if not os.path.isdir(directory):
        problems.append(f"{where}: {directory} is not a directory")
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        problems.append(f"{where}: {directory} is not writable by this user")
        return
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode & 0o077:
        warnings.append(f"{where}: {directory} is mode {mode:04o}: others may read what it holds (failed "
                        "logins, sending counts, the secret); chmod 0700 (S-1202)")
    for name in (*FILES, SECRET_FILENAME):
        file = os.path.join(directory, name)
        if os.path.islink(file):
            problems.append(f"{where}: {file} is a symbolic link; msa does not follow it: remove it")
            return
        if os.path.isfile(file) and (file_mode := stat.S_IMODE(os.stat(file).st_mode)) & 0o077:
            warnings.append(f"{where}: {file} is mode {file_mode:04o}: readable by others; msa makes it "
                            "0600 when it next opens it (S-1202)")
    path = os.path.join(directory, FILENAME)
    if not os.path.lexists(path):
        return
    if not os.path.isfile(path):
        problems.append(f"{where}: {path} is not a regular file")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        problems.append(f"{where}: cannot read {path}: {e.strerror}")
        return
    if head and head != _SQLITE_MAGIC:
        problems.append(f"{where}: {path} is not an SQLite database; move it away (msa makes a new one)")
    elif not os.access(path, os.W_OK):
        problems.append(f"{where}: {path} is not writable by this user")


#: Where inetd, xinetd and systemd keep what would start `msa inetd`.
INETD_PLACES = ("/etc/inetd.conf", "/etc/xinetd.conf", "/etc/xinetd.d", "/etc/systemd/system",
                "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system")
_INETD_FILES_MAX = 2000  # files looked at in all; a unit or inetd.conf is small
_INETD_FILE_OCTETS = 64 * 1024


def inetd_units(config_path: str, places: tuple[str, ...] = INETD_PLACES) -> list[str]:
    """`FILE:LINE` of each inetd.conf line, xinetd service or systemd unit
    that runs `msa ... inetd` with the configuration `config_path` (named
    with -c/--config, or the default when none is named)."""
    import shlex

    from util import files

    found: list[str] = []
    seen = 0
    for place in places:
        if os.path.isdir(place):
            try:
                names = sorted(os.listdir(place))
            except OSError:
                continue
            paths = [os.path.join(place, n) for n in names if not n.startswith(".")]
        else:
            paths = [place]
        for path in paths:
            seen += 1
            if seen > _INETD_FILES_MAX:
                return found
            try:
                text = files.read_regular(path, _INETD_FILE_OCTETS).decode("utf-8", "replace")
            except files.FileProblem:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                if "inetd" not in line or "msa" not in line or line.lstrip().startswith("#"):
                    continue
                try:
                    words = shlex.split(line.split("=", 1)[1] if line.lstrip().startswith(("ExecStart", "server_args")) else line)
                except ValueError:
                    continue
                if "inetd" not in words:
                    continue
                named = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--config")), None)
                named = named or next((w.split("=", 1)[1] for w in words if w.startswith("--config=")), None)
                named = named or "/etc/msa/msa.conf"
                try:
                    same = os.path.samefile(named, config_path)
                except OSError:
                    same = os.path.abspath(named) == os.path.abspath(config_path)
                if same:
                    found.append(f"{path}:{n}")
    return found


def _check_metrics(cfg: config_mod.Config, problems: list[str], warnings: list[str], notes: list[str]) -> None:
    """S-1501: the package must be there; inetd processes export nothing."""
    from server import metrics

    if why := metrics.module_problem():
        problems.append(f"{cfg.where('metrics_listen')}: metrics_listen: {why}")
    host, port = cfg.metrics_listen  # type: ignore[misc]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    notes.append(f"metrics_listen: `msa.py serve` exports metrics on http://{shown}/metrics; sessions served by "
                 "`msa.py inetd` export nothing")
    for unit in inetd_units(cfg.path):
        warnings.append(f"{cfg.where('metrics_listen')}: metrics_listen is set, but {unit} runs `msa inetd` with "
                        "this configuration: its sessions are not in /metrics (S-1501)")


def _check_redis(cfg: config_mod.Config, problems: list[str], warnings: list[str]) -> None:
    """S-1403: with `state = redis://...`, redis-py is there, the server
    answers PING and runs a script within state_timeout, and is Redis 6 or
    later; a password in the URL asks for a private configuration file."""
    from state.redis import RedisStore, module_problem

    where = f"{cfg.where('state')}: state"
    if why := module_problem():
        problems.append(f"{where}: {why}")
        return
    from urllib.parse import urlsplit

    if urlsplit(cfg.state).password:  # the Redis password is in the configuration file
        _readable_by_all(cfg.path, warnings)
    store = RedisStore(cfg.state, cfg.state_prefix, cfg.state_timeout, cfg.state_dir)
    try:
        if why := store.problem():
            problems.append(f"{where}: {why} (state_timeout {cfg.state_timeout:g} s)")
    finally:
        store.close()


#: Room for what msa adds to a message (Received:, Date:, Message-ID:, and
#: later signatures) when comparing the MTA's limit with msa's.
_ADDED_HEADER = 64 * 1024


def _check_dkim(cfg: config_mod.Config, problems: list[str], warnings: list[str], notes: list[str]) -> None:
    """S-1103: every key file loads and can sign; which domains sign."""
    from delivery import dkim_keys
    assert cfg.dkim_keys is not None
    where = f"{cfg.where('dkim_keys')}: dkim_keys"
    if not os.path.isdir(cfg.dkim_keys):
        problems.append(f"{where}: {cfg.dkim_keys} is not a directory (msa.py dkim keygen makes it)")
        return
    try:
        keys, found = dkim_keys.load(cfg.dkim_keys)
    except dkim_keys.CryptographyMissing as e:
        problems.append(f"{where}: {str(e).split(': ', 1)[1]}")
        return
    problems.extend(found)
    for key in keys.by_path:
        _readable_by_all(key, warnings)
        if cfg.run_as and os.getuid() == 0:
            warnings.append(f"{key}: a reload after run_as needs it readable by {cfg.run_as}")
    for domain in sorted(keys.by_domain):
        shown = ", ".join(f"{k.selector} ({k.algorithm}{f', {k.bits} bits' if k.bits else ''})"
                          for k in sorted(keys.by_domain[domain], key=lambda k: k.selector))
        notes.append(f"{where}: {domain} signs with {shown}")
    if not keys.by_domain and not found:
        warnings.append(f"{where}: no keys in {cfg.dkim_keys}: nothing is signed (msa.py dkim keygen DOMAIN)")


#: What `check` asks the SOP command to sign to prove a key works.
_PGP_PROBE = b"msa.py check\r\n"


def _check_pgp(cfg: config_mod.Config, db: object, problems: list[str], warnings: list[str], notes: list[str]) -> None:
    """S-1104: each pgp_keys/USER.key is a secret key of a user that the
    SOP command can sign with; its user IDs against the user's senders."""
    from signing import openpgp

    from delivery import child
    from util import files

    assert cfg.pgp_keys is not None
    where = f"{cfg.where('pgp_keys')}: pgp_keys"
    if not os.path.isdir(cfg.pgp_keys):
        problems.append(f"{where}: {cfg.pgp_keys} is not a directory (msa.py pgp keygen USER makes it)")
        return
    try:
        names = sorted(n for n in os.listdir(cfg.pgp_keys) if n.endswith(".key"))
    except OSError as e:
        problems.append(f"{where}: cannot list {cfg.pgp_keys}: {e.strerror}")
        return
    if not names:
        warnings.append(f"{where}: no keys in {cfg.pgp_keys}: nothing is PGP-signed (msa.py pgp keygen USER)")
    for name in names:
        path = os.path.join(cfg.pgp_keys, name)
        user = db.get(name[:-4]) if db is not None else None  # type: ignore[attr-defined]
        if db is not None and user is None:
            warnings.append(f"{path}: no user {name[:-4]!r} in {cfg.users}: the key is never used")
        try:
            data = files.read_regular(path, files.TLS_MAX_OCTETS)
            info = openpgp.describe(data)
        except openpgp.FormatError as e:
            problems.append(f"{path}: not an OpenPGP key: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - files.FileProblem: PATH: why
            problems.append(str(e))
            continue
        if not info.secret:
            problems.append(f"{path}: a public key ({info.kind}), not a secret key: msa cannot sign with it")
            continue
        _readable_by_all(path, warnings)
        if cfg.run_as and os.getuid() == 0:
            warnings.append(f"{path}: the signer runs as {cfg.run_as} and needs it readable")
        done = child.run([*cfg.pgp_sop, "sign", path], (_PGP_PROBE,), min(cfg.sendmail_timeout, 30),
                         stdout_limit=64 * 1024)
        if isinstance(done, OSError):
            problems.append(f"{cfg.where('pgp_sop')}: pgp_sop: cannot run {cfg.pgp_sop[0]}: "
                            f"{done.strerror or done} (Debian: apt install sqop)")
            return
        if done.status != 0 or b"-----BEGIN PGP SIGNATURE-----" not in done.stdout:
            why = "timeout" if done.status is None else f"exit {done.status}: " + \
                done.stderr.decode("utf-8", "replace").strip()[:200]
            problems.append(f"{path}: {cfg.pgp_sop[0]} cannot sign with it ({why}); a key with a passphrase "
                            "cannot be used unattended")
            continue
        addresses = info.addresses()
        notes.append(f"{where}: {name[:-4]} signs as {', '.join(addresses) or '(no address in its user IDs)'}")
        if user is not None:
            missing = [s for s in user.senders if not s.startswith("@") and s not in addresses]
            if missing:
                warnings.append(f"{path}: no user ID for {', '.join(missing)}: mail from there is signed by a "
                                "key that names another address, and readers show it as not matching")


def _check_smtp_handoff(cfg: config_mod.Config, problems: list[str], warnings: list[str]) -> None:
    """S-810: connect, read the EHLO reply, say what the MTA lacks; no mail."""
    import ipaddress

    from delivery.smtp import SmtpHandoff

    where = f"{cfg.where('handoff')}: handoff"
    relay = cfg.handoff
    assert relay is not None
    try:
        loopback = ipaddress.ip_address(relay.host).is_loopback
    except ValueError:
        loopback = relay.host == "localhost"
    if not loopback:
        warnings.append(f"{where}: {relay.host} is not a loopback address, and msa speaks plaintext SMTP to it (S-806)")
    got = SmtpHandoff(relay.host, relay.port, cfg.hostname).probe(min(cfg.sendmail_timeout, 30))
    if isinstance(got, str):
        problems.append(f"{where}: cannot use {relay}: {got}")
        return
    if not got.xforward:
        warnings.append(f"{where}: {relay} does not offer XFORWARD: the MTA logs msa, not the real client "
                        "(README \"The MTA\": smtpd_authorized_xforward_hosts)")
    if not got.dsn:
        warnings.append(f"{where}: {relay} does not offer DSN: the clients' DSN requests are dropped (S-809)")
    if not got.smtputf8:
        warnings.append(f"{where}: {relay} does not offer SMTPUTF8: messages with UTF-8 addresses get 554 5.6.7")
    if got.size and got.size < cfg.max_message_size + _ADDED_HEADER:
        warnings.append(f"{where}: {relay} offers SIZE {got.size}, below max_message_size {cfg.max_message_size} "
                        "plus msa's added header: the MTA would refuse what msa accepts")


def _readable_by_all(path: str, warnings: list[str]) -> None:
    """S-1012: users.db (its hashes) and the TLS key are for msa alone."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # missing or unreadable: reported, or warned about, already
    if mode & stat.S_IROTH:
        warnings.append(f"{path}: mode {mode:04o}: readable by every user; chmod 600 (or 640 for msa's group)")


def _check_mta(cfg: config_mod.Config, sendmail: str, warnings: list[str]) -> None:
    """S-805: say what the MTA needs to trust msa."""
    real = os.path.realpath(sendmail)
    if "exim" in real:
        warnings.append(f"{cfg.where('sendmail')}: Exim ignores -f unless msa's user is in trusted_users (see README)")
        return
    postconf = shutil.which("postconf", path="/usr/sbin:/usr/bin:/sbin:/bin")
    words = list(cfg.sendmail)
    private = words[words.index("-C") + 1] if "-C" in words[:-1] else None
    config_dir = private or "/etc/postfix"
    is_postfix = "postfix" in real or os.path.exists(os.path.join(config_dir, "main.cf"))
    if postconf is None or not is_postfix:
        return
    args = [postconf, "-c", config_dir] if private else [postconf]
    try:
        out = subprocess.run([*args, "-h", "message_size_limit"], capture_output=True, text=True, timeout=10)
        limit = int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return
    if limit and limit < cfg.max_message_size + _ADDED_HEADER:
        warnings.append(
            f"{cfg.where('max_message_size')}: Postfix's message_size_limit is {limit}, below max_message_size "
            f"{cfg.max_message_size} plus msa's added header: Postfix would refuse what msa accepts"
        )
