"""PostfixAdmin's tables (research notes §1b, from PostfixAdmin's upgrade.php)
for PostgreSQL, MariaDB and SQLite, and the users and aliases the SQL
directory tests log in as.

Only the columns the tests need beside the keys: ``domain``; ``mailbox``
with ``username, password, active, smtp_active`` (``smtp_active`` came with
upgrade_1850); ``alias`` with ``address, goto, active`` (``goto`` holds
comma-separated targets). ``active`` is boolean in PostgreSQL and
tinyint(1) in MySQL/MariaDB, as PostfixAdmin makes them; SQLite stores 0/1.
"""

from __future__ import annotations

PASSWORD = b"correct horse battery"

# Hashes of PASSWORD, each made once by Dovecot 2.3.19.1's doveadm (Debian dovecot-core):
HASHES = {
    # doveadm pw -s ARGON2ID -p 'correct horse battery'
    "argon2id": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$ROMTXOVgvNPTaGkxm4h7Zg$O38JHvw5tIfVmBOBEoox4F0W+iqKW8/X/Ob0mEIajSo",
    # doveadm pw -s BLF-CRYPT -p 'correct horse battery'
    "bcrypt": "{BLF-CRYPT}$2y$05$LZJBOSyf.h2W0dG4P7Kb2eJ4E2r311RsanPbbJxdWKCCcHINSCwHy",
    # doveadm pw -s SHA512-CRYPT -p 'correct horse battery'
    "sha512": "{SHA512-CRYPT}$6$B5Sy1QCaJlmV/A/P$dy3FcmDtRMXed/vu9j1hib.6qhOlsAAzBVgZXCNq.opLjdx21Qoc2TMfNqCYtw7MiHGky1o2eZI3RmTivtUsF1",
    # doveadm pw -s SHA256-CRYPT -p 'correct horse battery'
    "sha256": "{SHA256-CRYPT}$5$kAv.9ozJZrztUk3t$BX0LT.5eL6e/mEkHaVTdp5Mm6Yjb28F8apokC7AVjF2",
    # doveadm pw -s SHA512-CRYPT -r 10000 -p 'correct horse battery', stored without its prefix
    # (PostfixAdmin's php_crypt writes bare hashes)
    "bare": "$6$rounds=10000$JOHm8cVDVzxYJlVK$BSGFTfXYS.gZAyh/emECZo0dYe2opnsYhqaPyIa9oeDSDQ34sjMoolu1XzmzGYhmwp/CcTItzUlPURj67wrVC0",
    # doveadm pw -s MD5-CRYPT -p 'correct horse battery'
    "md5": "{MD5-CRYPT}$1$qfnxVI.n$H572bBw6A41QBhkYZIKBr1",
}

#: The users that log in with PASSWORD, by the scheme of their hash.
GOOD = {
    "argon2id": "argon2id@example.org",
    "bcrypt": "bcrypt@example.org",
    "sha512": "sha512@example.org",
    "sha256": "sha256@example.org",
    "bare": "bare@example.org",
}

# (username, hash, active, smtp_active)
MAILBOXES = [
    *((name, HASHES[scheme], True, True) for scheme, name in GOOD.items()),
    ("md5@example.org", HASHES["md5"], True, True),
    ("inactive@example.org", HASHES["bcrypt"], False, True),
    ("nosmtp@example.org", HASHES["bcrypt"], True, False),
]

# (address, goto, active)
ALIASES = [
    ("postmaster@example.org", "bcrypt@example.org", True),
    ("abuse@example.org", "bcrypt@example.org", True),
    ("@example.net", "bcrypt@example.org", True),  # PostfixAdmin's catch-all form
    ("old@example.org", "bcrypt@example.org", False),
    ("team@example.org", "bcrypt@example.org,sha512@example.org", True),  # two targets
    ("sales@example.org", "sha512@example.org", True),
]

DOMAINS = ["example.org", "example.net"]

POSTGRES_DDL = """
CREATE TABLE domain (
    domain varchar(255) NOT NULL PRIMARY KEY,
    description varchar(255) NOT NULL DEFAULT '',
    created timestamp with time zone NOT NULL DEFAULT now(),
    modified timestamp with time zone NOT NULL DEFAULT now(),
    active boolean NOT NULL DEFAULT true
);
CREATE TABLE mailbox (
    username varchar(255) NOT NULL PRIMARY KEY,
    password varchar(255) NOT NULL DEFAULT '',
    name varchar(255) NOT NULL DEFAULT '',
    maildir varchar(255) NOT NULL DEFAULT '',
    quota bigint NOT NULL DEFAULT 0,
    local_part varchar(255) NOT NULL DEFAULT '',
    domain varchar(255) NOT NULL REFERENCES domain,
    created timestamp with time zone NOT NULL DEFAULT now(),
    modified timestamp with time zone NOT NULL DEFAULT now(),
    active boolean NOT NULL DEFAULT true,
    smtp_active boolean NOT NULL DEFAULT true
);
CREATE INDEX mailbox_domain_idx ON mailbox (domain);
CREATE TABLE alias (
    address varchar(255) NOT NULL PRIMARY KEY,
    goto text NOT NULL,
    domain varchar(255) NOT NULL REFERENCES domain,
    created timestamp with time zone NOT NULL DEFAULT now(),
    modified timestamp with time zone NOT NULL DEFAULT now(),
    active boolean NOT NULL DEFAULT true
);
CREATE INDEX alias_domain_idx ON alias (domain);
"""

MARIADB_DDL = """
CREATE TABLE domain (
    domain varchar(255) NOT NULL,
    description varchar(255) NOT NULL DEFAULT '',
    created datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    modified datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    active tinyint(1) NOT NULL DEFAULT 1,
    PRIMARY KEY (domain)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='Postfix Admin - Virtual Domains';
CREATE TABLE mailbox (
    username varchar(255) NOT NULL,
    password varchar(255) NOT NULL DEFAULT '',
    name varchar(255) NOT NULL DEFAULT '',
    maildir varchar(255) NOT NULL DEFAULT '',
    quota bigint(20) NOT NULL DEFAULT 0,
    local_part varchar(255) NOT NULL DEFAULT '',
    domain varchar(255) NOT NULL,
    created datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    modified datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    active tinyint(1) NOT NULL DEFAULT 1,
    smtp_active tinyint(1) NOT NULL DEFAULT 1,
    PRIMARY KEY (username),
    KEY domain (domain)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='Postfix Admin - Virtual Mailboxes';
CREATE TABLE alias (
    address varchar(255) NOT NULL,
    goto text NOT NULL,
    domain varchar(255) NOT NULL,
    created datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    modified datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    active tinyint(1) NOT NULL DEFAULT 1,
    PRIMARY KEY (address),
    KEY domain (domain)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='Postfix Admin - Virtual Aliases';
"""

SQLITE_DDL = """
CREATE TABLE domain (
    domain varchar(255) NOT NULL PRIMARY KEY,
    description varchar(255) NOT NULL DEFAULT '',
    active boolean NOT NULL DEFAULT 1
);
CREATE TABLE mailbox (
    username varchar(255) NOT NULL PRIMARY KEY,
    password varchar(255) NOT NULL DEFAULT '',
    domain varchar(255) NOT NULL REFERENCES domain,
    active boolean NOT NULL DEFAULT 1,
    smtp_active boolean NOT NULL DEFAULT 1
);
CREATE TABLE alias (
    address varchar(255) NOT NULL PRIMARY KEY,
    goto text NOT NULL,
    domain varchar(255) NOT NULL REFERENCES domain,
    active boolean NOT NULL DEFAULT 1
);
"""


def statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]


def rows() -> dict[str, list[tuple]]:
    """The rows to insert, per table: (columns, values) in insertion order."""
    return {
        "domain": [(domain,) for domain in DOMAINS],
        "mailbox": [(user, hashed, user.split("@")[1], active, smtp) for user, hashed, active, smtp in MAILBOXES],
        "alias": [(address, goto, address.split("@")[1], active) for address, goto, active in ALIASES],
    }


COLUMNS = {
    "domain": ("domain",),
    "mailbox": ("username", "password", "domain", "active", "smtp_active"),
    "alias": ("address", "goto", "domain", "active"),
}


def load(cursor, placeholder: str) -> None:
    """Insert every row through a DB-API ``cursor`` whose parameter marker
    is ``placeholder`` (``%s`` or ``?``)."""
    for table, values in rows().items():
        columns = COLUMNS[table]
        marks = ", ".join([placeholder] * len(columns))
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)


#: What ``counts`` returns once the tables are loaded.
EXPECTED_COUNTS = {"domain": len(DOMAINS), "mailbox": len(MAILBOXES), "alias": len(ALIASES)}
