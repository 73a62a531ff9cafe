"""Ed25519 key pairs (``cryptography``), key ids, and key files.

Key id: hex SHA-256 of the raw 32-byte public key (DESIGN.md, "Signed records"). The private key is
stored as unencrypted PKCS#8 PEM with file mode 0600, written atomically; loading a private key file
that group or others can read is refused.

Creating a key file is race-free: the PEM is written and fsync'd under a temporary name and then
hard-linked to its final name, which fails if that name exists. Of several processes creating a key
at once exactly one succeeds; the others get ``key_exists`` and load the winner's key, complete.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import sha256_hex
from .errors import KeyFileError, SignatureError


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """Key id: hex SHA-256 of the raw 32-byte public key."""
    raw = public_key if isinstance(public_key, bytes) else public_key_bytes(public_key)
    return sha256_hex(raw)


def load_public_key(raw_or_hex: bytes | str) -> Ed25519PublicKey:
    """Public key from raw 32 bytes or their 64-character hex.

    Raises:
        SignatureError: not a valid Ed25519 public key.
    """
    try:
        raw = bytes.fromhex(raw_or_hex) if isinstance(raw_or_hex, str) else raw_or_hex
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}", reason="bad_public_key") from exc


def verify_raw(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Verify an Ed25519 signature; raises :class:`SignatureError` when it does not verify."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify") from exc


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 private key with its public half and key id."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()

    @property
    def public_key_hex(self) -> str:
        """Hex of the raw 32-byte public key (what a hub registers)."""
        return public_key_bytes(self.public_key).hex()

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the raw 32-byte public key."""
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``message``."""
        return self.private_key.sign(message)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (what :meth:`save` writes)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def save(self, path: Path) -> None:
        """Create the private key file with mode 0600 (complete or not at all, never over an existing
        one, race-free) and write the public key hex beside it (``.pub``).

        Raises:
            KeyFileError: ``key_exists`` when ``path`` exists (another process may just have created
                it: load that one); ``key_unwritable`` when the folder cannot be created or written.
        """
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _create_exclusive(path, self.private_pem(), mode=0o600)
        except FileExistsError as exc:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a private key", reason="key_exists",
                               hint="`autoresearch keys generate --force` keeps the old key as a dated backup") from exc
        except OSError as exc:
            raise _unwritable(path, exc) from exc
        try:
            _write_atomic(path.with_suffix(".pub"), (self.public_key_hex + "\n").encode(), mode=0o644)
        except OSError as exc:
            raise _unwritable(path.with_suffix(".pub"), exc) from exc

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        """Load a private key written by :meth:`save`.

        Raises:
            KeyFileError: missing, readable by group/others, or not an Ed25519 PEM key.
        """
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise KeyFileError(f"no private key at {path}", reason="key_missing") from exc
        if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"private key {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); refusing to use it",
                reason="key_permissions",
                hint=f"chmod 600 {path}",
            )
        fix = "restore it from a backup beside it (*.bak), or replace it: `autoresearch keys generate --force`"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}", reason="key_unreadable",
                               hint=f"check the permissions of {path} and its folder") from exc
        except (ValueError, TypeError) as exc:
            message = " ".join(str(exc).split())[:200]
            raise KeyFileError(f"{path} is not a PEM private key: {message}", reason="key_malformed", hint=fix) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key", reason="key_malformed", hint=fix)
        return cls(key)


def backup_key_file(path: Path, now: datetime | None = None) -> Path:
    """Move the key file ``path`` (and its ``.pub``) aside to a dated backup beside it,
    ``ed25519.pem.20260314T150926Z.bak``, never over an existing file; returns the backup's path.

    Raises:
        KeyFileError: ``key_missing`` when there is no key file; ``key_unwritable`` when the folder
            cannot be written.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        suffix = stamp if n == 1 else f"{stamp}-{n}"
        backup = path.with_name(f"{path.name}.{suffix}.bak")
        try:
            os.link(path, backup)  # the same inode: mode 0600 kept, fails if the name is taken
        except FileExistsError:
            continue
        except FileNotFoundError as exc:
            raise KeyFileError(f"no private key at {path}", reason="key_missing") from exc
        except OSError as exc:
            raise _unwritable(backup, exc) from exc
        break
    else:  # pragma: no cover - a thousand backups within one second
        raise KeyFileError(f"too many backups of {path} at {stamp}", reason="key_unwritable")
    pub = path.with_suffix(".pub")
    try:
        if pub.exists():
            os.replace(pub, pub.with_name(f"{pub.name}.{suffix}.bak"))
        path.unlink()
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    return backup


def _unwritable(path: Path, exc: OSError) -> KeyFileError:
    return KeyFileError(
        f"cannot write {path}: {exc.strerror or exc}",
        reason="key_unwritable",
        hint=f"make {path.parent} writable by this user, or set AUTORESEARCH_HOME to a writable folder",
    )


def _create_exclusive(path: Path, data: bytes, *, mode: int) -> None:
    """Create ``path`` holding ``data`` (mode ``mode``) only if it does not exist, atomically: written
    and fsync'd as a temp file, then hard-linked into place (``FileExistsError`` if taken). Where the
    file system has no hard links, an ``O_EXCL`` create is the (non-atomic) fallback."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            xfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(xfd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable (POSIX); a no-op where directories cannot be opened."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a temp file in the same folder with ``mode``, fsync, rename into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
