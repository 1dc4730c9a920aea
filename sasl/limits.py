"""Every bound of the ``sasl`` package, each named with its source.

This module owns numbers only: no code of the package writes a bare limit
elsewhere (STYLE.md "What msa takes" 5). It imports nothing.
"""

from __future__ import annotations

# --- names and passwords ----------------------------------------------------

#: Octets in a user name (authcid) and in an authorization identity
#: (SPEC.md S-505, S-509; RFC 4616 §2 allows up to 255 octets).
MAX_USERNAME_OCTETS = 255

#: Octets in a password sent with PLAIN or LOGIN (SPEC.md S-505, RFC 4616 §2).
MAX_PASSWORD_OCTETS = 255

# --- CRAM-MD5 (RFC 2195, SPEC.md S-507, S-508) -------------------------------

#: Random bits in a CRAM-MD5 challenge (SPEC.md S-507).
CRAM_CHALLENGE_RANDOM_OCTETS = 8

#: Hex digits of a client's CRAM-MD5 digest: one MD5 value (RFC 2195 §2).
CRAM_DIGEST_HEX_DIGITS = 32

#: Hex digits of a stored CRAM-MD5 credential: two MD5 states of four
#: 32-bit words each (Dovecot's ``{CRAM-MD5}`` form, SPEC.md S-508).
CRAM_CREDENTIAL_HEX_DIGITS = 64

#: HMAC block size for MD5 (RFC 2104 §2): longer keys are hashed first.
HMAC_MD5_BLOCK_OCTETS = 64

# --- SCRAM-SHA-256 (RFC 5802, RFC 7677, SPEC.md S-514) ----------------------

#: Iteration counts a stored credential may name: RFC 5802 §7 makes it a
#: ``posit-number`` (at least 1); at most 65536, since Cyrus SASL clients
#: refuse more (S-514). RFC 7677 §4's "at least 4096" is what msa writes
#: (SCRAM_DEFAULT_ITERATIONS), not a floor: a credential imported from
#: Dovecot with fewer still works, as it did there.
SCRAM_MIN_ITERATIONS = 1
SCRAM_MAX_ITERATIONS = 65_536

#: What ``msa.py user --scram`` writes unless told otherwise (CONTRACT.md;
#: RFC 7677 §4; Dovecot's default too).
SCRAM_DEFAULT_ITERATIONS = 4096

#: Salt octets of a stored credential: RFC 8018 §4.1 says a PBKDF2 salt
#: should be at least eight octets. The upper bound keeps the server-first
#: message (which carries the salt) short; Dovecot and msa write 16.
SCRAM_MIN_SALT_OCTETS = 8
SCRAM_MAX_SALT_OCTETS = 64

#: Salt octets msa makes, for real and for fake credentials (as Dovecot).
SCRAM_SALT_OCTETS = 16

#: StoredKey, ServerKey, ClientProof and ServerSignature: one SHA-256 output
#: each (RFC 7677 §3, FIPS 180-4).
SCRAM_KEY_OCTETS = 32

#: Random octets in the server's part of the nonce (S-514: at least 18;
#: base64 makes 24 characters of them).
SCRAM_SERVER_NONCE_OCTETS = 18

# --- argon2id hashes in users.db (SPEC.md S-1013, RFC 9106 §3.1) ------------

#: Memory cost in KiB above which a stored hash is refused: 256 MiB, since a
#: verify allocates what the hash names and argon2 slots multiply it.
ARGON2_MAX_MEMORY_KIB = 262_144

#: Time cost (passes) above which a stored hash is refused (S-1013).
ARGON2_MAX_TIME_COST = 10

#: Parallelism (lanes) above which a stored hash is refused (S-1013).
ARGON2_MAX_PARALLELISM = 8

#: RFC 9106 §3.1: memory must be at least 8 KiB per lane.
ARGON2_MIN_MEMORY_KIB_PER_LANE = 8

#: RFC 9106 §3.1: salt at least 8 octets; tag at least 4 octets.
ARGON2_MIN_SALT_OCTETS = 8
ARGON2_MIN_HASH_OCTETS = 4

#: Upper bounds on salt and tag, so that one line cannot ask for a huge
#: output (argon2-cffi writes 16 and 32 octets; Dovecot the same).
ARGON2_MAX_SALT_OCTETS = 1024
ARGON2_MAX_HASH_OCTETS = 1024

# --- hashes from other systems (SPEC.md S-1304) ----------------------------

#: bcrypt cost (log2 of the rounds) above which a stored hash is refused:
#: cost 16 is about 5 s of one core; Dovecot and PHP write 5 to 12.
BCRYPT_MAX_COST = 16

#: The smallest cost bcrypt defines (crypt_blowfish refuses less).
BCRYPT_MIN_COST = 4

#: SHA-crypt rounds above which a stored hash is refused (S-1304); the
#: scheme allows up to 999,999,999, about half an hour of one core.
SHA_CRYPT_MAX_ROUNDS = 1_000_000

#: SHA-crypt's own floor, and the count a hash without ``rounds=`` uses
#: (Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512").
SHA_CRYPT_MIN_ROUNDS = 1000
SHA_CRYPT_IMPLICIT_ROUNDS = 5000

#: Longest stored hash looked at: an argon2 PHC string with the largest
#: salt and tag allowed above (1024 octets each) stays under it.
MAX_STORED_HASH_CHARS = 4096

#: Octets of the password bcrypt uses: crypt_blowfish (which Dovecot and
#: PHP call) ignores the rest, and the ``bcrypt`` package refuses more.
BCRYPT_PASSWORD_OCTETS = 72

#: What Dovecot's ``doveadm pw`` writes, so that a dummy costs what the
#: hashes in a PostfixAdmin database cost (S-510): bcrypt cost 5,
#: SHA-crypt's implicit 5000 rounds. argon2 dummies use argon2-cffi's
#: defaults, as the users.db dummy does.
DUMMY_BCRYPT_COST = 5
DUMMY_SHA_CRYPT_ROUNDS = SHA_CRYPT_IMPLICIT_ROUNDS

# --- permitted senders (SPEC.md S-206, S-603) -------------------------------

#: Octets of a local part and of a domain (RFC 5321 §4.5.3.1.1, §4.5.3.1.2).
MAX_LOCAL_PART_OCTETS = 64
MAX_DOMAIN_OCTETS = 255

#: Octets of one DNS label (RFC 1035 §2.3.4).
MAX_LABEL_OCTETS = 63

# --- failure delays (SPEC.md S-511) -----------------------------------------

#: Delay after the first failure; it doubles with each further one.
THROTTLE_FIRST_DELAY_SECONDS = 1.0

#: The delay never exceeds this.
THROTTLE_MAX_DELAY_SECONDS = 30.0

#: A client address is forgotten this long after its last failure.
THROTTLE_FORGET_SECONDS = 15 * 60

#: Failure counts stop growing here (2**5 = 32 > 30 already): keeps the
#: arithmetic small however long an attack runs.
THROTTLE_MAX_COUNTED_FAILURES = 16

#: User names remembered per client address; beyond it the oldest name's
#: failures join THROTTLE_OTHER_NAMES, which no success clears (S-511).
THROTTLE_MAX_NAMES = 32
THROTTLE_OTHER_NAMES = "\0"

# --- tables held in memory (DESIGN.md "Bounded, and the unknown refused") ---

#: Entries in the failure-delay table; the oldest is dropped beyond it.
THROTTLE_MAX_ENTRIES = 10_000

#: Entries in the verified-credential cache (S-512); the oldest is dropped.
CACHE_MAX_ENTRIES = 10_000

#: Octets of the per-process BLAKE2b key of the credential cache (S-512);
#: BLAKE2b accepts keys up to 64 octets (RFC 7693 §2.1).
CACHE_KEY_OCTETS = 32

#: IPv6 clients are counted by their /64 network (SPEC.md S-109, S-511).
IPV6_CLIENT_PREFIX = 64
