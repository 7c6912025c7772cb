"""One storage interface over ``file://``, ``s3://`` and ``gs://``, chosen by the URI.

A ``Storage`` is rooted at a folder URI (``s3://bucket/models``); keys are relative paths
under it. Clients are created once per storage object, from the standard settings
(``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``), so the same code reaches the cloud or a
local stand-in without knowing which.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from gemcast.errors import NotFoundError, StorageError


class Storage(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def child(self, prefix: str) -> Storage: ...


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _check_key(key: str) -> str:
    if key.startswith("/") or any(part in {"..", "."} for part in key.split("/")):
        raise StorageError(f"invalid key {key!r}: keys are relative paths without '.' or '..'")
    return key


class FileStorage:
    """A local folder. Writes are atomic: a temporary file renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.uri}/{key} does not exist") from exc

    def write_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        ]
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> FileStorage:
        return FileStorage(self.root / _check_key(prefix))


class S3Storage:
    """An S3 bucket and prefix, through boto3 (``AWS_ENDPOINT_URL`` reaches a stand-in)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self) -> Any:
        # Created at first use: a Lambda function that reads the registry only on some routes
        # does not pay for an S3 client in its cold start.
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _key(self, key: str) -> str:
        return _join(self.prefix, _check_key(key))

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFoundError(f"{self.uri}/{key} does not exist") from exc
        return bytes(response["Body"].read())

    def write_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        # A PUT replaces the whole object at once: readers see the old or the new, never half.
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        base = self.prefix + "/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            keys.extend(obj["Key"][len(base):] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def child(self, prefix: str) -> S3Storage:
        return S3Storage(self.bucket, _join(self.prefix, _check_key(prefix)), client=self.client)


class GCSStorage:
    """A Cloud Storage bucket and prefix (``STORAGE_EMULATOR_HOST`` reaches a stand-in)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if client is None:
            from google.cloud import storage as gcs  # type: ignore[attr-defined]

            client = gcs.Client()
        self.client = client
        self.bucket_name = bucket
        self.bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.uri = f"gs://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return _join(self.prefix, _check_key(key))

    def read_bytes(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return bytes(self.bucket.blob(self._key(key)).download_as_bytes())
        except NotFound as exc:
            raise NotFoundError(f"{self.uri}/{key} does not exist") from exc

    def write_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.bucket.blob(self._key(key)).upload_from_string(
            data, content_type=content_type or "application/octet-stream"
        )

    def exists(self, key: str) -> bool:
        return bool(self.bucket.blob(self._key(key)).exists())

    def list(self, prefix: str = "") -> list[str]:
        base = self.prefix + "/" if self.prefix else ""
        blobs = self.client.list_blobs(self.bucket_name, prefix=base + prefix)
        return sorted(b.name[len(base):] for b in blobs)

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):  # deleting what is not there is not an error
            self.bucket.blob(self._key(key)).delete()

    def child(self, prefix: str) -> GCSStorage:
        return GCSStorage(self.bucket_name, _join(self.prefix, _check_key(prefix)), client=self.client)


def split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket or '', path) of a storage URI."""
    parsed = urlparse(uri)
    scheme = parsed.scheme or "file"
    if scheme == "file":
        return "file", "", unquote(parsed.path) if parsed.scheme else uri
    if scheme in {"s3", "gs"}:
        if not parsed.netloc:
            raise StorageError(f"{uri!r} names no bucket: expected {scheme}://BUCKET/PREFIX")
        return scheme, parsed.netloc, parsed.path.lstrip("/")
    raise StorageError(f"unsupported storage URI {uri!r}: use file://, s3:// or gs://")


def open_storage(uri: str, client: Any = None) -> Storage:
    """The storage rooted at ``uri``. A plain path counts as ``file://``."""
    scheme, bucket, path = split_uri(uri)
    if scheme == "file":
        return FileStorage(path)
    if scheme == "s3":
        return S3Storage(bucket, path, client=client)
    return GCSStorage(bucket, path, client=client)


def _parent_and_name(uri: str) -> tuple[str, str]:
    head, _, name = uri.rstrip("/").rpartition("/")
    if not name or not head:
        raise StorageError(f"{uri!r} names no object")
    if head.endswith(":/") or head.endswith(":"):
        raise StorageError(f"{uri!r} names a bucket, not an object")
    return head, name


def read_uri(uri: str, client: Any = None) -> bytes:
    """Read one object named by its full URI (or a local path)."""
    if "://" not in uri:
        return FileStorage(Path(uri).parent).read_bytes(Path(uri).name)
    parent, name = _parent_and_name(uri)
    return open_storage(parent, client=client).read_bytes(name)


def write_uri(uri: str, data: bytes, client: Any = None, content_type: str | None = None) -> None:
    if "://" not in uri:
        FileStorage(Path(uri).parent).write_bytes(Path(uri).name, data, content_type)
        return
    parent, name = _parent_and_name(uri)
    open_storage(parent, client=client).write_bytes(name, data, content_type)
