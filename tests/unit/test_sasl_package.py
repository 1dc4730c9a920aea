"""The shape of sasl/: sans-IO imports, small modules, documented (DESIGN.md, STYLE.md)."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys

import pytest

import sasl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SASL = os.path.join(ROOT, "sasl")
MODULES = sorted(name for name in os.listdir(SASL) if name.endswith(".py"))
FORBIDDEN = {"smtp_states", "server", "socket", "ssl", "threading", "subprocess", "select", "asyncio"}
# DESIGN.md "Layout": argon2-cffi, and bcrypt and passlib (libpass) for the
# stored hashes of S-1304 (sasl/hashes.py, each imported only when a hash needs it).
ALLOWED_THIRD_PARTY = {"argon2", "idna", "bcrypt", "passlib"}


def imported_modules(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", MODULES)
def test_sasl_is_sans_io(module):  # DESIGN.md: the core never touches sockets, threads, processes
    imported = imported_modules(os.path.join(SASL, module))
    assert not imported & FORBIDDEN
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= ALLOWED_THIRD_PARTY
    if third_party:
        assert module in {"verify.py", "userdb.py", "phc.py", "senders.py", "hashes.py"}


@pytest.mark.parametrize("module", MODULES)
def test_sasl_opens_no_file(module):  # DESIGN.md: the shell reads users.db (util/files.py)
    tree = ast.parse(open(os.path.join(SASL, module), encoding="utf-8").read())
    called = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not called & {"open", "os.open", "io.open", "os.read", "os.stat"}


@pytest.mark.parametrize("module", MODULES)
def test_modules_are_small_and_documented(module):  # STYLE.md 8, 13
    path = os.path.join(SASL, module)
    text = open(path, encoding="utf-8").read()
    assert len(text.splitlines()) < 400
    assert ast.get_docstring(ast.parse(text))
    assert "except:" not in text


def test_importing_sasl_does_not_load_argon2_or_idna():  # DESIGN.md: lazy imports
    code = "import sys, sasl; print('argon2' in sys.modules, 'idna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "cls", [sasl.Challenge, sasl.Credentials, sasl.Failure, sasl.User, sasl.AuthResult, sasl.ScramCredential]
)
def test_results_are_frozen_slotted_dataclasses(cls):  # STYLE.md 9
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen
    assert "__slots__" in cls.__dict__


def test_public_names_are_exported():
    for name in sasl.__all__:
        assert hasattr(sasl, name)
