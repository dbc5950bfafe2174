"""webdataset tar shards: brace / glob expansion, indexing, filters, damaged shards, pickling."""
import gzip
import json
import pickle

import numpy as np
import pytest

from ldm_jax.data.decode import decode_image
from ldm_jax.data.records import BadRecord
from ldm_jax.data.webdataset import TarShardSource, expand_braces, expand_shards
from tests.data.make_files import encode, laion_members, solid, write_tar


def _shards(tmp_path, count=2, per_shard=3, **kwargs):
    paths = []
    for shard in range(count):
        keys = [f"{shard}{i:04d}" for i in range(per_shard)]
        paths.append(write_tar(tmp_path / "laion" / f"{shard:05d}.tar", laion_members(keys, **kwargs)))
    return paths


def test_expand_braces():
    assert expand_braces("s-{00008..00011}.tar") == ["s-00008.tar", "s-00009.tar", "s-00010.tar", "s-00011.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("x{1,{2..3}}") == ["x1", "x2", "x3"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("plain{}{x}.tar") == ["plain{}{x}.tar"]


def test_expand_shards_with_braces_lists_and_globs(tmp_path):
    paths = [str(path) for path in _shards(tmp_path, count=3)]
    folder = tmp_path / "laion"
    assert expand_shards(str(folder / "{00000..00002}.tar")) == paths
    assert expand_shards(str(folder / "{00002,00000}.tar")) == [paths[2], paths[0]]
    assert expand_shards(str(folder / "*.tar")) == paths
    assert expand_shards([str(folder / "00001.tar"), str(folder / "0000[02].tar"), paths[1]]) == [
        paths[1], paths[0], paths[2]]  # in pattern order, duplicates dropped


def test_expand_shards_errors(tmp_path):
    _shards(tmp_path, count=2)
    with pytest.raises(ValueError, match="no tar shards given"):
        expand_shards([])
    with pytest.raises(FileNotFoundError, match="00002.tar"):
        expand_shards(str(tmp_path / "laion" / "{00000..00002}.tar"))
    with pytest.raises(FileNotFoundError, match="no tar shards match"):
        expand_shards(str(tmp_path / "laion" / "*.tgz"))


def test_every_sample_is_read_once_with_caption_and_meta(tmp_path):
    _shards(tmp_path)
    source = TarShardSource(str(tmp_path / "laion" / "{00000..00001}.tar"))
    assert len(source) == 6 and source.filtered == 0 and source.lost_members == {}
    records = [source[i] for i in range(len(source))]
    keys = [record["key"] for record in records]
    assert keys == [f"0000{s}/{s}{i:04d}" for s in range(2) for i in range(3)]
    for record, (shard, i) in zip(records, [(s, i) for s in range(2) for i in range(3)]):
        assert record["caption"] == f"caption {shard}{i:04d}"
        assert record["meta"]["similarity"] == 0.3 and record["meta"]["width"] == 8
        assert abs(int(decode_image(record["image"], record["key"])[0, 0, 0]) - 10 * i) <= 3


def test_caption_from_json_and_label_from_cls(tmp_path):
    image = encode(solid((9, 9, 9)), "PNG")
    write_tar(tmp_path / "a.tar", [("dir/k1.png", image), ("dir/k1.json", json.dumps({"text": " from json "}).encode()),
                                   ("dir/k1.cls", b"7\n"), ("k2.webp", encode(solid((1, 2, 3)), "WEBP")),
                                   ("k2.cls", b"not a number")])
    source = TarShardSource(str(tmp_path / "a.tar"))
    first = source[0]
    assert first["key"] == "a/dir/k1" and first["caption"] == "from json" and first["label"] == 7
    assert first["image"] == image
    with pytest.raises(BadRecord, match="integer class label"):
        source[1]


def test_filters_are_applied_at_index_time_and_counted(tmp_path):
    sizes = {"00000": (300, 200), "00001": (100, 400), "00002": (50, 60), "00003": (500, 500)}
    members = laion_members(list(sizes), sizes=sizes)
    members = [m for m in members if m[0] != "00003.txt"]
    members = [(n, json.dumps({"width": 500, "height": 500}).encode()) if n == "00003.json" else (n, d)
               for n, d in members]
    write_tar(tmp_path / "f.tar", members)
    source = TarShardSource(str(tmp_path / "f.tar"), min_size=64, max_aspect_ratio=2.0, caption_required=True)
    assert [source[i]["key"] for i in range(len(source))] == ["f/00000"]
    assert source.filtered == 3
    assert source.filtered_by_reason == {"min_size": 1, "max_aspect_ratio": 1, "no_caption": 1}
    assert len(TarShardSource(str(tmp_path / "f.tar"))) == 4


def test_missing_image_is_a_bad_record_at_access(tmp_path):
    members = laion_members(["a", "b", "c"])
    write_tar(tmp_path / "m.tar", [m for m in members if m[0] != "b.jpg"])
    source = TarShardSource(str(tmp_path / "m.tar"))
    assert len(source) == 3
    assert source[0]["key"] == "m/a" and source[2]["key"] == "m/c"
    with pytest.raises(BadRecord, match="no image member") as caught:
        source[1]
    assert caught.value.key == "m/b"


def test_truncated_shard_is_indexed_up_to_the_damage(tmp_path):
    good, cut = _shards(tmp_path, count=2, per_shard=4)
    data = cut.read_bytes()
    cut.write_bytes(data[:4700])  # inside the second sample's image
    with pytest.warns(RuntimeWarning, match=r"00001.tar.*truncated or corrupt.*lost 1 member"):
        source = TarShardSource([str(good), str(cut)])
    assert source.lost_members == {str(cut): 1}
    assert [source[i]["key"] for i in range(len(source))] == [f"00000/0{i:04d}" for i in range(4)] + ["00001/10000"]


def test_shard_cut_inside_a_header_counts_the_lost_member(tmp_path):
    (shard,) = _shards(tmp_path, count=1, per_shard=2)
    shard.write_bytes(shard.read_bytes()[:3000])  # the first sample's json header is cut
    with pytest.warns(RuntimeWarning, match="lost 1 member"):
        source = TarShardSource(str(shard))
    assert len(source) == 1 and source[0]["caption"] == "caption 00000" and "meta" not in source[0]


def test_unreadable_and_compressed_shards(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file at all" * 30)
    with pytest.warns(RuntimeWarning, match="junk.tar"):
        source = TarShardSource(str(tmp_path / "junk.tar"))
    assert len(source) == 0
    (shard,) = _shards(tmp_path, count=1)
    (tmp_path / "z.tar").write_bytes(gzip.compress(shard.read_bytes()))
    with pytest.raises(ValueError, match="gzip-compressed"):
        TarShardSource(str(tmp_path / "z.tar"))


def test_pickles_without_open_files_and_reads_in_the_copy(tmp_path):
    _shards(tmp_path)
    source = TarShardSource(str(tmp_path / "laion" / "*.tar"))
    expected = [source[i] for i in range(len(source))]  # opens descriptors in this process
    state = source.__getstate__()
    assert state["_files"] == {}
    copy = pickle.loads(pickle.dumps(source))
    assert [copy[i] for i in range(len(copy))] == expected
    assert np.array_equal(copy._members, source._members)
