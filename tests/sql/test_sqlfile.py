"""The SQL directory's file (directory/sqlfile.py; SPEC.md S-1303, CONTRACT.md
"Directories") and the driver glue that needs no server: parsing, problems
as FILE:LINE, the bounded read, the mode warning, :login's translation, a
missing driver named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from directory import sql, sqldrivers, sqlfile

# CONTRACT.md "Directories", verbatim.
CONTRACT_EXAMPLE = """\
[sql]
dsn = postgresql://msa@db.example/mail       # or mysql://..., sqlite:///var/lib/mail/users.sqlite
password = ...                               # optional; or in the DSN, or a ~/.pgpass
# PostfixAdmin: the hash of an active mailbox that may use SMTP
password_query = SELECT password FROM mailbox WHERE username = :login AND active AND smtp_active
# what that login may send as: itself, and every alias that delivers to it
senders_query = SELECT :login UNION SELECT address FROM alias WHERE goto = :login AND active
default_scheme = ARGON2ID
timeout = 5
"""


def problems(text: str, path: str = "sql.conf") -> list[str]:
    with pytest.raises(sqlfile.SqlConfigError) as error:
        sqlfile.parse(text, path)
    return error.value.problems


def test_contract_example_parses_as_written():  # S-1303, CONTRACT.md
    config = sqlfile.parse(CONTRACT_EXAMPLE, "sql.conf")
    assert config.kind == "postgresql"
    assert config.dsn == "postgresql://msa@db.example/mail"  # the inline comment is not part of it
    assert config.password == "..."
    assert config.password_query == (
        "SELECT password FROM mailbox WHERE username = :login AND active AND smtp_active"
    )
    assert config.senders_query == "SELECT :login UNION SELECT address FROM alias WHERE goto = :login AND active"
    assert (config.default_scheme, config.timeout) == ("ARGON2ID", 5.0)
    assert config.where("password_query") == "sql.conf:5"
    assert "..." not in repr(config) and "db.example" not in repr(config)  # password and DSN stay out


def test_defaults_continuation_lines_and_crlf():  # S-1303
    text = (
        "; comment\r\n[sql]\r\ndsn = sqlite:///var/lib/mail/users.sqlite\r\n"
        "senders_query = SELECT address FROM alias\r\n    WHERE goto = :login  # trailing comment\r\n"
        "  AND active\r\n"
    )
    config = sqlfile.parse(text, "s")
    assert config.senders_query == "SELECT address FROM alias\nWHERE goto = :login\nAND active"
    assert (config.password_query, config.default_scheme, config.timeout) == (None, "ARGON2ID", 5.0)
    assert config.sqlite_path() == "/var/lib/mail/users.sqlite"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dsn = sqlite:///x\n", "sql.conf:1: expected the section header [sql] before any key"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT :login\nuser = x\n", "sql.conf:4: unknown key 'user'"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT :login\ndsn = sqlite:///y\n",
         "sql.conf:4: duplicate key 'dsn' (first on line 2)"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT :login\n[other]\n",
         "sql.conf:4: unknown section '[other]' (only [sql] is read)"),
        ("# nothing\n", "sql.conf: no [sql] section"),
        ("[sql]\nsenders_query = SELECT :login\n", "sql.conf: dsn is required"),
        ("[sql]\ndsn = oracle://x\nsenders_query = SELECT 1\n", "sql.conf:2: dsn must start with"),
        ("[sql]\ndsn = sqlite://relative.db\nsenders_query = SELECT 1\n", "sql.conf:2: expected sqlite:///ABSOLUTE/PATH"),
        ("[sql]\ndsn = mysql://u@h/db?sslmode=on\nsenders_query = SELECT 1\n",
         "sql.conf:2: unknown DSN parameter 'sslmode'"),
        ("[sql]\ndsn = mysql://u@h:port/db\nsenders_query = SELECT 1\n", "sql.conf:2: malformed mysql:// DSN"),
        ("[sql]\ndsn = sqlite:///x\npassword = p\nsenders_query = SELECT 1\n",
         "sql.conf:3: an SQLite database has no password"),
        ("[sql]\ndsn = sqlite:///x\npassword_query = SELECT password FROM mailbox\n",
         "sql.conf:3: password_query does not use :login"),
        ("[sql]\ndsn = sqlite:///x\npassword_query = SELECT p FROM t WHERE u = x::login\n",
         "sql.conf:3: password_query does not use :login"),
        ("[sql]\ndsn = sqlite:///x\n", "sql.conf: neither password_query nor senders_query is set"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query =\n", "sql.conf:3: senders_query is empty"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT 1\ndefault_scheme = MD5-CRYPT\n",
         "sql.conf:4: default_scheme must be one of ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT 1\ntimeout = 0\n", "sql.conf:4: timeout must be seconds"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT 1\ntimeout = nan\n", "sql.conf:4: timeout must be seconds"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT 1\ntimeout = 1e9\n", "sql.conf:4: timeout must be seconds"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT '\u202e'\n", "sql.conf:3: senders_query has a control"),
        ("[sql]\ndsn = sqlite:///x\nsenders_query = SELECT 1\n  AND 2\n\n  orphan\n", "sql.conf:6: an indented line"),
        ("[sql]\nthis is not a key\n", "sql.conf:2: expected 'key = value'"),
    ],
)
def test_each_problem_is_file_line_why(text, expected):  # S-1303
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once():  # S-1303
    found = problems("[sql]\nuser = a\ntimeout = -1\ndefault_scheme = PLAIN\n")
    assert len(found) == 5, found  # unknown key, no dsn, no query, scheme, timeout


def test_a_missing_file_a_fifo_a_device_and_a_huge_file_are_named_without_hanging(tmp_path):  # S-1303
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge"
    huge.write_bytes(b"#" * (sqlfile.MAX_FILE_OCTETS + 1))
    code = (
        "import sys\nfrom directory import sqlfile\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n        sqlfile.load(path)\n"
        "    except sqlfile.SqlConfigError as e:\n        print(e.problems[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "absent"), str(fifo), "/dev/zero", str(huge), str(tmp_path)],
        capture_output=True, text=True, timeout=20, cwd=Path(__file__).resolve().parents[2], check=True,
    )  # fmt: skip
    assert out.stdout.splitlines() == [
        f"{tmp_path / 'absent'}: no such file",
        f"{fifo}: not a regular file (a FIFO)",
        "/dev/zero: not a regular file (a character device)",
        f"{huge}: larger than 1 MiB, the most msa reads from such a file",
        f"{tmp_path}: not a regular file (a directory)",
    ]


def test_not_utf8_is_file_line(tmp_path):  # S-1303
    path = tmp_path / "sql.conf"
    path.write_bytes(b"[sql]\ndsn = sqlite:///x\nsenders_query = SELECT '\xff'\n")
    with pytest.raises(sqlfile.SqlConfigError) as error:
        sqlfile.load(str(path))
    assert error.value.problems == [f"{path}:3: not valid UTF-8"]


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, False), (0o400, False), (0o440, False),
                                              (0o644, True), (0o660, True), (0o604, True), (0o700, True)])  # fmt: skip
def test_mode_wider_than_0640_is_warned(tmp_path, mode, warned):  # CONTRACT.md "Directories"
    path = tmp_path / "sql.conf"
    path.write_text(CONTRACT_EXAMPLE)
    path.chmod(mode)
    problem = sqlfile.mode_problem(str(path))
    assert (problem is not None) == warned
    if warned:
        assert problem == f"{path}: mode {mode:04o} lets others read the database password; use chmod 600 (or 640)"


def test_mysql_dsn_parts():  # S-1303
    text = "[sql]\ndsn = mysql://mail%20user:p%40ss@db.example:3307/post%2Ffix?unix_socket=/run/mysqld/s.sock\nsenders_query = SELECT 1\n"
    params = sqlfile.parse(text, "s").mysql_params()
    assert params == {"host": "db.example", "port": 3307, "user": "mail user", "password": "p@ss",
                      "database": "post/fix", "unix_socket": "/run/mysqld/s.sock"}  # fmt: skip
    with_key = sqlfile.parse(text + "password = from the key\n", "s").mysql_params()
    assert with_key["password"] == "from the key"
    bare = sqlfile.parse("[sql]\ndsn = mysql://localhost\nsenders_query = SELECT 1\n", "s").mysql_params()
    assert (bare["port"], bare["user"], bare["password"], bare["database"]) == (3306, None, "", None)


def test_login_placeholder_translation():  # S-1303
    assert sqldrivers._pyformat("SELECT :login UNION SELECT a FROM t WHERE g = :login") == (
        "SELECT %(login)s UNION SELECT a FROM t WHERE g = %(login)s"
    )
    # a literal % survives psycopg's and PyMySQL's formatting; a cast is not the placeholder
    assert sqldrivers._pyformat("SELECT x FROM t WHERE a LIKE '%@x' AND b = :login AND c = d::login_type") == (
        "SELECT x FROM t WHERE a LIKE '%%@x' AND b = %(login)s AND c = d::login_type"
    )
    assert sqldrivers._pyformat(":login") == "%(login)s"
    assert sqldrivers._pyformat(":logins :login_x") == ":logins :login_x"


@pytest.mark.parametrize(
    ("dsn", "module", "package"),
    [("postgresql:///mail", "psycopg", "python3-psycopg"), ("mysql://localhost/mail", "pymysql", "python3-pymysql")],
)
def test_a_missing_driver_is_named(tmp_path, monkeypatch, dsn, module, package):  # S-1303
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is not installed
    path = tmp_path / "sql.conf"
    path.write_text(f"[sql]\ndsn = {dsn}\nsenders_query = SELECT :login\n")
    config = sql.load(str(path))
    with pytest.raises(sql.SqlConfigError) as error:
        sql.SqlDirectory(config, warn=print)
    [problem] = error.value.problems
    assert problem.startswith(f"{path}:2: a ") and package in problem
    assert sql.check(config) == [problem]


def test_drivers_are_imported_only_when_configured(tmp_path):  # S-1303, DESIGN.md
    path = tmp_path / "sql.conf"
    path.write_text(f"[sql]\ndsn = sqlite://{tmp_path}/none.sqlite\nsenders_query = SELECT :login\n")
    code = (
        "import sys\nfrom directory import sql\n"
        f"d = sql.SqlDirectory(sql.load({str(path)!r}), warn=print)\n"
        "print(sorted(m for m in ('psycopg', 'pymysql', 'bcrypt', 'passlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert out.stdout == "[]\n"


def test_a_name_with_nul_is_refused_before_any_query(tmp_path):  # S-1303
    from directory import Client, Verdict

    path = tmp_path / "sql.conf"
    # a database that cannot be opened: any query would be a temporary failure
    path.write_text(
        f"[sql]\ndsn = sqlite://{tmp_path}/absent.sqlite\ndefault_scheme = SHA256-CRYPT\n"
        "password_query = SELECT password FROM mailbox WHERE username = :login\n"
        "senders_query = SELECT :login\n"
    )
    warnings: list[str] = []
    directory = sql.SqlDirectory(sql.load(str(path)), warn=warnings.append)
    for name in ("alice@example.org\0", "\0", "a\0' OR '1'='1"):
        assert directory.authenticate(name, b"pw", Client()) == Verdict(known=False, reason="name contains NUL")
        assert directory.senders(name) == ()
    assert warnings == []
    assert directory.authenticate("x" * 256, b"pw", Client()) == Verdict(known=False, reason="name longer than 255 octets")
    assert directory.authenticate("alice@example.org", b"pw", Client()).temporary  # the query was tried
    assert len(warnings) == 1 and "unable to open database file" in warnings[0]
