"""``autoresearch keys generate|show``: the client's Ed25519 key pair."""

from __future__ import annotations

from typing import Annotated

import typer

from autoresearch.protocol import KeyFileError, KeyPair, backup_key_file

from .. import config, console
from ..errors import UsageError

keys_app = typer.Typer(help="Manage this client's Ed25519 signing key (in $AUTORESEARCH_HOME/keys).", no_args_is_help=True)


def load_keys() -> KeyPair:
    """The user's key pair.

    Raises:
        UsageError: there is no key yet (hint: ``autoresearch keys generate``).
        KeyFileError: the key file is malformed or too permissive.
    """
    path = config.key_path()
    if not path.exists():
        raise UsageError(f"no signing key at {path}", hint="create one with: autoresearch keys generate")
    return KeyPair.load(path)


def load_or_create_keys() -> KeyPair:
    """The user's key pair, generated on first use.

    Race-free: when several processes create it at once, one key file is written and every one of
    them returns that key (the losers load the winner's file).

    Raises:
        KeyFileError: the key file is malformed, too permissive, or its folder is not writable.
    """
    path = config.key_path()
    try:
        return KeyPair.load(path)
    except KeyFileError as exc:
        if exc.reason != "key_missing":
            raise
    keys = KeyPair.generate()
    try:
        keys.save(path)
    except KeyFileError as exc:
        if exc.reason != "key_exists":
            raise
        return KeyPair.load(path)  # another process created it a moment ago: that one is ours too
    console.info(f"generated signing key {keys.key_id[:16]}… at {path}")
    return keys


@keys_app.command("generate")
def generate(
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key; the old one is kept as a dated backup beside it.")
    ] = False,
) -> None:
    """Generate an Ed25519 key pair (private key mode 0600) and print its key id."""
    path = config.key_path()
    backup = None
    if path.exists():
        if not force:
            raise UsageError(f"a key already exists at {path}", hint="`autoresearch keys show` prints it; --force replaces it (keeping a backup)")
        try:
            old_id: str | None = KeyPair.load(path).key_id
        except KeyFileError:
            old_id = None  # a broken key is backed up all the same
        backup = backup_key_file(path)
    keys = KeyPair.generate()
    keys.save(path)
    console.out().print(keys.key_id, highlight=False)
    console.info(f"private key: {path} (mode 600)")
    if backup is not None:
        which = f"key {old_id[:16]}…" if old_id else "key file"
        console.info(
            f"the previous {which} is kept at {backup}; hubs know this machine by its key: "
            "`autoresearch join` registers the new one"
        )


@keys_app.command("show")
def show(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the key id (hex SHA-256 of the raw public key) and the public key (hex)."""
    keys = load_keys()
    if json_:
        console.print_json({"key_id": keys.key_id, "public_key": keys.public_key_hex, "path": str(config.key_path())})
        return
    console.out().print(f"key id:     {keys.key_id}\npublic key: {keys.public_key_hex}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


__all__ = ["KeyFileError", "load_keys", "load_or_create_keys", "register"]
