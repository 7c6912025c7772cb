"""One storage interface, three back ends: a folder, S3 (moto server), Cloud Storage (emulator)."""

from __future__ import annotations

import boto3
import pytest

from gemcast.errors import NotFoundError, StorageError
from gemcast.storage import FileStorage, open_storage, read_uri, split_uri, write_uri

BUCKET = "gemcast-test-data"


@pytest.fixture(params=["file", "s3", "gs"])
def root_uri(request, tmp_path):
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    if request.param == "s3":
        request.getfixturevalue("aws_env")
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        return f"s3://{BUCKET}/root"
    request.getfixturevalue("gcs_env")
    from google.cloud import storage as gcs

    gcs.Client().create_bucket(BUCKET)
    return f"gs://{BUCKET}/root"


def test_write_read_list_delete(root_uri):
    store = open_storage(root_uri)
    store.write_bytes("models/v1/model.npz", b"\x00\x01binary", "application/octet-stream")
    store.write_bytes("models/v1/manifest.json", b"{}")
    store.write_bytes("raw/batch.csv", b"a,b\n")
    assert store.read_bytes("models/v1/model.npz") == b"\x00\x01binary"
    assert store.exists("raw/batch.csv") and not store.exists("raw/other.csv")
    assert store.list("models/") == ["models/v1/manifest.json", "models/v1/model.npz"]
    assert store.child("models").list() == ["v1/manifest.json", "v1/model.npz"]
    store.write_bytes("raw/batch.csv", b"replaced")
    assert store.read_bytes("raw/batch.csv") == b"replaced"
    store.delete("raw/batch.csv")
    store.delete("raw/batch.csv")  # deleting twice is not an error
    assert not store.exists("raw/batch.csv")
    with pytest.raises(NotFoundError, match="raw/batch.csv"):
        store.read_bytes("raw/batch.csv")


def test_whole_object_uris(root_uri):
    write_uri(f"{root_uri}/one/file.txt", b"hello")
    assert read_uri(f"{root_uri}/one/file.txt") == b"hello"


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/./b"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(StorageError):
        FileStorage(tmp_path).write_bytes(key, b"x")


def test_uri_forms():
    assert split_uri("s3://b/p/q") == ("s3", "b", "p/q")
    assert split_uri("gs://b") == ("gs", "b", "")
    assert split_uri("/tmp/x") == ("file", "", "/tmp/x")
    with pytest.raises(StorageError, match="unsupported"):
        split_uri("ftp://host/x")
    with pytest.raises(StorageError, match="no bucket"):
        split_uri("s3:///x")


def test_file_writes_leave_no_temporary_files(tmp_path):
    store = FileStorage(tmp_path)
    for i in range(5):
        store.write_bytes("champion.json", str(i).encode())
    assert [p.name for p in tmp_path.iterdir()] == ["champion.json"]
