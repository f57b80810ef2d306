"""Signed ledger checkpoints published outside the database (spec §15).

A checkpoint document is JSON::

    {"checkpoint": {"format": "backfill-checkpoint/1", "origin": ..., "size": SEQ, "head": HASH,
                    "time": "...Z"},
     "key": "<SHA-256 of the raw public key, hex>", "signature": "<base64 Ed25519 signature>"}

The signature covers the canonical JSON (``backfill.chain.canonical_json``, UTF-8) of
``checkpoint``. ``origin`` is the ledger's own identity (``ledger_meta``), so a checkpoint of one
ledger never vouches for another; ``size`` and ``head`` say which event it commits to.

Destinations: a folder (``/path`` or ``file:///path``) or an Azure Blob container
(``azblob://CONTAINER/PREFIX``; the connection string comes from ``AZURE_STORAGE_CONNECTION_STRING``,
``azure-storage-blob`` is imported only then; production containers carry an immutability
policy). Documents are never overwritten: each has a new name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backfill.chain import canonical_json, format_at, parse_at
from backfill.errors import ConfigError, LedgerInvalid
from backfill.timeutil import utcnow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "backfill-checkpoint/1"
CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
PREFIX = "checkpoint-"


@dataclass(frozen=True)
class SignedCheckpoint:
    origin: str
    size: int
    head: str
    time: datetime
    key: str
    signature: str

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "size": self.size,
            "head": self.head,
            "time": format_at(self.time),
        }

    def document(self) -> str:
        return canonical_json({"checkpoint": self.body(), "key": self.key, "signature": self.signature}) + "\n"

    @property
    def name(self) -> str:
        # Sorts by size, then time; unique per signing.
        return f"{PREFIX}{self.size:012d}-{self.time:%Y%m%dT%H%M%S%fZ}.json"


# --- keys ------------------------------------------------------------------------------------------


def generate_key(private_path: Path) -> Path:
    """Write a new Ed25519 key pair: ``private_path`` (PEM, mode 600) and ``private_path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists; keygen never overwrites a key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private)
        public_path.write_bytes(public)
    except OSError as exc:
        raise ConfigError(f"cannot write {private_path}: {exc.strerror or exc}") from None
    return public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"--sign {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        problem = "not an unencrypted PEM private key (backfill ledger keygen makes one)"
        raise ConfigError(f"--sign {path}: {problem}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"--sign {path}: not an Ed25519 key (backfill ledger keygen makes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"--key {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"--key {path}: not a PEM public key (the .pub file of backfill ledger keygen)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"--key {path}: not an Ed25519 public key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# --- signing and checking ------------------------------------------------------------------------


def sign(key: Ed25519PrivateKey, origin: str, size: int, head: str) -> SignedCheckpoint:
    unsigned = SignedCheckpoint(origin, size, head, utcnow(), key_id(key.public_key()), "")
    signature = key.sign(canonical_json(unsigned.body()).encode("utf-8"))
    return SignedCheckpoint(
        origin, size, head, unsigned.time, unsigned.key, base64.b64encode(signature).decode("ascii")
    )


def parse_document(name: str, text: str, public: Ed25519PublicKey) -> SignedCheckpoint:
    """A published document whose signature verifies with ``public``; LedgerInvalid otherwise."""
    from cryptography.exceptions import InvalidSignature

    try:
        data = json.loads(text)
        body = data["checkpoint"]
        if body.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        checkpoint = SignedCheckpoint(
            str(body["origin"]),
            int(body["size"]),
            str(body["head"]),
            parse_at(str(body["time"])),
            str(data["key"]),
            str(data["signature"]),
        )
        signature = base64.b64decode(checkpoint.signature, validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LedgerInvalid(f"anchor {name}: not a signed checkpoint ({exc})") from None
    try:
        public.verify(signature, canonical_json(checkpoint.body()).encode("utf-8"))
    except InvalidSignature:
        problem = "signature does not verify with the given key (forged or altered)"
        raise LedgerInvalid(f"anchor {name}: {problem}") from None
    return checkpoint


# --- destinations ----------------------------------------------------------------------------------


class Destination(Protocol):
    def write(self, name: str, document: str) -> str: ...

    def documents(self) -> Iterator[tuple[str, str]]: ...


class FolderDestination:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, document: str) -> str:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with (self.folder / name).open("x", encoding="utf-8") as out:  # "x": never overwrite
                out.write(document)
        except OSError as exc:
            raise ConfigError(f"--publish {self.folder}: {exc.strerror or exc}") from None
        return str(self.folder / name)

    def documents(self) -> Iterator[tuple[str, str]]:
        if not self.folder.is_dir():
            raise ConfigError(f"--anchors {self.folder}: no such folder")
        for path in sorted(self.folder.glob(f"{PREFIX}*.json")):
            yield str(path), path.read_text(encoding="utf-8")


class BlobDestination:
    def __init__(self, container: str, prefix: str) -> None:
        self.container = container
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.where = f"azblob://{container}/{self.prefix}"

    def _client(self) -> Any:
        connection = os.environ.get(CONNECTION_ENV, "").strip()
        if not connection:
            raise ConfigError(f"{self.where}: set {CONNECTION_ENV} to the storage account's connection string")
        try:
            from azure.storage.blob import ContainerClient
        except ImportError:
            raise ConfigError(f"{self.where} needs azure-storage-blob: pip install 'backfill[azure-blob]'") from None
        try:
            return ContainerClient.from_connection_string(connection, self.container)
        except ValueError as exc:
            raise ConfigError(f"{CONNECTION_ENV}: {exc}") from None

    def write(self, name: str, document: str) -> str:
        from azure.core.exceptions import AzureError, ResourceExistsError

        client = self._client()
        try:
            client.upload_blob(self.prefix + name, document.encode("utf-8"), overwrite=False)
        except ResourceExistsError:
            raise ConfigError(f"{self.where}{name} exists; a published checkpoint is never replaced") from None
        except AzureError as exc:
            raise ConfigError(f"{self.where}: {str(exc).splitlines()[0]}") from None
        return self.where + name

    def documents(self) -> Iterator[tuple[str, str]]:
        from azure.core.exceptions import AzureError

        client = self._client()
        try:
            for blob in client.list_blobs(name_starts_with=self.prefix + PREFIX):
                text = client.download_blob(blob.name).readall().decode("utf-8")
                yield f"azblob://{self.container}/{blob.name}", text
        except AzureError as exc:
            raise ConfigError(f"{self.where}: {str(exc).splitlines()[0]}") from None


def destination(text: str) -> Destination:
    if text.startswith("azblob://"):
        container, _, prefix = text.removeprefix("azblob://").partition("/")
        if not container:
            raise ConfigError(f"{text}: name a container, azblob://CONTAINER/PREFIX")
        return BlobDestination(container, prefix)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"{text}: publish to a folder or azblob://CONTAINER/PREFIX")
    return FolderDestination(Path(text.removeprefix("file://")))


def check_anchors(
    where: str, public: Ed25519PublicKey, origin: str, head: int, lookup: Callable[[set[int]], dict[int, str]]
) -> list[SignedCheckpoint]:
    """Every document at ``where``: signature and origin checked, then against the verified
    ledger (``lookup`` gives its hash at each anchored seq). LedgerInvalid on any mismatch."""
    anchors = [(name, parse_document(name, text, public)) for name, text in destination(where).documents()]
    if not anchors:
        raise ConfigError(f"--anchors {where}: no signed checkpoints there")
    hashes = lookup({a.size for _, a in anchors if 0 < a.size <= head})
    for name, anchor in anchors:
        if anchor.origin != origin:
            raise LedgerInvalid(f"anchor {name}: of ledger {anchor.origin}, not this one ({origin})")
        if anchor.size > head:
            raise LedgerInvalid(
                f"anchor {name}: the ledger ends at event {head} but a signed checkpoint is event "
                f"{anchor.size} (truncated)"
            )
        if anchor.size > 0 and hashes.get(anchor.size) != anchor.head:
            raise LedgerInvalid(
                f"anchor {name}: event {anchor.size} does not match the signed checkpoint (history rewritten)"
            )
    return [a for _, a in anchors]
