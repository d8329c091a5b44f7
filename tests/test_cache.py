"""The disk cache (phi_hig.cache): created once, read back unchanged, written atomically, loaded safely."""
import os
import pickle

import pytest
import torch

from phi_hig import cache


def _data():
    return torch.arange(6.).reshape(2, 3), torch.ones(2, dtype=torch.int64)


def test_creates_once_and_reads_back_the_same_tensors(tmp_path):
    path = str(tmp_path / 'sub' / 'data.pt')
    calls = []
    first = cache.load_or_create(path, lambda: calls.append(1) or _data())
    second = cache.load_or_create(path, lambda: calls.append(1) or _data())
    assert calls == [1]
    assert all(torch.equal(a, b) for a, b in zip(first, second)) and isinstance(second, tuple)
    assert os.listdir(tmp_path / 'sub') == ['data.pt']  # no temporary file left behind


def test_no_path_never_caches(tmp_path):
    calls = []
    for _ in range(2):
        cache.load_or_create(None, lambda: calls.append(1) or _data())
    assert calls == [1, 1] and os.listdir(tmp_path) == []


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    path = str(tmp_path / 'data.pt')
    with pytest.raises(Exception):
        cache.load_or_create(path, lambda: (torch.ones(1), lambda: None))  # a lambda cannot be pickled
    assert os.listdir(tmp_path) == []


def test_write_goes_through_a_temporary_file_in_the_same_folder(tmp_path, monkeypatch):
    """`os.replace` of a complete temporary file from the target folder: readers never see a partial file."""
    replaced = []
    original = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: replaced.append((src, dst)) or original(src, dst))
    path = str(tmp_path / 'data.pt')
    cache.load_or_create(path, _data)
    (src, dst), = replaced
    assert dst == path and os.path.dirname(src) == str(tmp_path) and src != dst


def test_the_rename_is_made_durable_by_an_fsync_of_the_folder(tmp_path, monkeypatch):
    """The cache writes through `phi_hig.files.atomic_write`, which fsyncs the folder after the rename."""
    from phi_hig import files
    synced = []
    original = files.fsync_folder
    monkeypatch.setattr(files, 'fsync_folder', lambda folder: synced.append(folder) or original(folder))
    cache.load_or_create(str(tmp_path / 'sub' / 'data.pt'), _data)
    assert synced == [str(tmp_path / 'sub')]


class _Payload:
    def __reduce__(self):
        return (print, ('code ran',))


def test_files_are_loaded_with_weights_only(tmp_path):
    path = str(tmp_path / 'evil.pt')
    with open(path, 'wb') as f:
        pickle.dump(_Payload(), f)
    with pytest.raises(pickle.UnpicklingError):
        cache.load_or_create(path, _data)


def test_key_is_a_stable_hash_of_the_parts():
    assert cache.key(1, 1024, 64, 64, 8, 1) == cache.key(1, 1024, 64, 64, 8, 1) != cache.key(2, 1024, 64, 64, 8, 1)
    import hashlib
    assert cache.key(1, 2) == hashlib.sha1(b'[1, 2]').hexdigest()[:12]  # the names of existing cache files
