"""Accounts of the review page: argon2id password hashes, and the ``stopewatch surface user`` commands.

Only the hash is stored (``users.password_hash``, argon2-cffi's PHC string with its own salt and
parameters); a password is never written to the database, a log or the audit trail. Roles are ordered
``viewer`` < ``reviewer`` < ``admin``: a viewer reads, a reviewer also relabels, an admin also reads the
audit trail and the user list.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge.errors import UserError
from surface.store import ROLES, Store, User

MIN_PASSWORD = 8  # characters; a longer passphrase is better, the hash takes any length
_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory defaults
# Verified against when the user does not exist, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("stopewatch: no such user")


def role_at_least(role: str, needed: str) -> bool:
    """True when ``role`` may do what ``needed`` may (viewer < reviewer < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (UserError when it is too short)."""
    check_password(password)
    return _hasher.hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: {len(password)} characters; at least {MIN_PASSWORD} are needed")
    if any(ord(c) < 32 for c in password):
        raise UserError("password holds control characters; use printable characters only")


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The user when ``password`` is right, else None; rehashes a hash made with older parameters."""
    user = store.get_user(username) if username else None
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        store.set_password_hash(user.username, _hasher.hash(password))
    return user


def session_tag(user: User) -> str:
    """A short fingerprint of the user's hash, kept in the session: a password change ends old sessions."""
    import hashlib

    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def read_password(password_file: str | None, confirm: bool = True) -> str:
    """The new password: from ``password_file`` ('-' is stdin; the first line), else a prompt on a terminal,
    else the first line of stdin."""
    if password_file and password_file != "-":
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as exc:
            raise UserError(f"--password-file {password_file}: cannot read ({exc.strerror or exc})") from None
        text = lines[0] if lines else ""
    elif password_file == "-" or not sys.stdin.isatty():
        text = sys.stdin.readline().rstrip("\r\n")
    else:
        text = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != text:
            raise UserError("the two passwords differ; nothing changed")
    check_password(text)
    return text


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def add_user(store: Store, username: str, role: str, password: str, actor: str | None = None) -> User:
    """Create a user from a clear password (hashed here; the clear text goes no further)."""
    if not username or len(username) > 64 or any(c.isspace() or ord(c) < 32 for c in username):
        raise UserError(f"user name {username!r}: expected 1-64 characters without spaces")
    try:
        return store.create_user(username, hash_password(password), role, actor or _actor())
    except ValueError as exc:
        raise UserError(str(exc)) from None


def change_password(store: Store, username: str, password: str, actor: str | None = None) -> None:
    try:
        store.set_password_hash(username, hash_password(password), actor or _actor())
    except KeyError:
        raise UserError(f"no user {username!r}") from None


def change_role(store: Store, username: str, role: str, actor: str | None = None) -> None:
    try:
        store.set_role(username, role, actor or _actor())
    except KeyError:
        raise UserError(f"no user {username!r}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def remove_user(store: Store, username: str, actor: str | None = None) -> None:
    try:
        store.delete_user(username, actor or _actor())
    except KeyError:
        raise UserError(f"no user {username!r}") from None
