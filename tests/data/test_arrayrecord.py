"""write_dataset / tfds_source round trips (real TFDS ArrayRecord datasets, no TensorFlow) and the converter."""
import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ldm_jax import cli
from ldm_jax.data import build
from ldm_jax.data.arrayrecord import tfds_source, write_dataset
from ldm_jax.data.decode import decode_image, decode_segmentation
from ldm_jax.data.folder import ImageFolderSource
from ldm_jax.data.records import BadRecord
from tests.data.make_files import broken_files, encode, laion_members, solid, write_image_folder, write_tar


def _records(count, caption_every=2):
    for i in range(count):
        record = {"key": f"img{i:03d}", "image": encode(solid((i, 255 - i, 7)), "PNG" if i % 2 else "JPEG"),
                  "label": i % 3}
        if i % caption_every == 0:
            record["caption"] = f"caption {i}"
        yield record


def _digests(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def test_round_trip_is_byte_identical_in_order(tmp_path):
    records = list(_records(10))
    written = write_dataset(records, tmp_path, "toy", num_shards=3, class_names=["a", "b", "c"])
    assert written.num_records == 10 and written.num_shards == 3 and written.skipped == ()
    assert sorted(p.name for p in written.directory.iterdir()) == [
        "dataset_info.json", "features.json", "label.labels.txt",
        "toy-train.array_record-00000-of-00003", "toy-train.array_record-00001-of-00003",
        "toy-train.array_record-00002-of-00003"]
    source = tfds_source("toy", data_dir=tmp_path)
    assert len(source) == 10 and source.classes == ["a", "b", "c"]
    for original, index in zip(records, range(10)):
        read = source[index]
        assert read["key"] == original["key"] and read["image"] == original["image"]
        assert read["label"] == original["label"]
        assert read["caption"] == original.get("caption", "")
    info = tfds.builder_from_directory(written.directory).info
    assert info.splits["train"].shard_lengths == [3, 4, 3]  # contiguous, balanced, in order


def test_plain_tfds_data_source_reads_it(tmp_path):
    write_dataset(_records(4), tmp_path, "plain", num_shards=2)
    data = tfds.data_source("plain", split="train", data_dir=tmp_path, download=False)
    assert len(data) == 4
    assert data[1]["key"] == b"img001" and int(data[1]["label"]) == 1
    assert data[1]["image"].shape == (6, 8, 3)


def test_writing_is_deterministic(tmp_path):
    write_dataset(_records(7), tmp_path / "one", "same", num_shards=2)
    write_dataset(_records(7), tmp_path / "two", "same", num_shards=2)
    first, second = _digests(tmp_path / "one" / "same" / "1.0.0"), _digests(tmp_path / "two" / "same" / "1.0.0")
    assert first == second and len(first) == 4


def test_bad_records_are_skipped_and_counted(tmp_path):
    def items():
        yield {"key": "ok0", "image": encode(solid((1, 1, 1)), "PNG")}
        yield BadRecord("broken", "truncated")
        yield {"key": "no_image"}
        yield {"key": "ok1", "image": encode(solid((2, 2, 2)), "PNG"), "label": -1}
        yield {"key": "ok2", "image": encode(solid((3, 3, 3)), "PNG")}

    written = write_dataset(items(), tmp_path, "skips", num_shards=5)
    assert written.num_records == 2 and written.num_shards == 2  # never more shards than records
    assert [key for key, _ in written.skipped] == ["broken", "no_image", "ok1"]
    assert "non-negative integer" in dict(written.skipped)["ok1"]
    source = tfds_source("skips", data_dir=tmp_path)
    assert [source[i]["key"] for i in range(len(source))] == ["ok0", "ok2"]


def test_a_random_access_source_is_written_with_its_bad_records_skipped(tmp_path):
    root = write_image_folder(tmp_path / "f", {"a.png": encode(solid((1, 1, 1)), "PNG"), "a.json": b"{oops",
                                               "b.png": encode(solid((2, 2, 2)), "PNG")})
    written = write_dataset(ImageFolderSource(root), tmp_path / "out", "folder_direct")
    assert written.num_records == 1 and [key for key, _ in written.skipped] == ["a.png"]
    assert tfds_source("folder_direct", data_dir=tmp_path / "out")[0]["key"] == "b.png"


def test_arrays_segmentation_and_meta_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    segmentation = rng.integers(0, 20, (5, 4), dtype=np.int32)
    written = write_dataset([{"key": "k", "image": image, "segmentation": segmentation,
                              "meta": {"width": np.int64(4), "score": 0.5},
                              "boxes": [{"category": 2, "bbox": [0.1, 0.2, 0.3, 0.4]}]}], tmp_path, "arrays")
    assert written.num_shards == 1
    read = tfds_source("arrays", data_dir=tmp_path)[0]
    np.testing.assert_array_equal(decode_image(read["image"], "k"), image)  # stored as lossless PNG
    np.testing.assert_array_equal(decode_segmentation(read["segmentation"], "k"), segmentation)
    assert read["meta"] == {"width": 4, "score": 0.5}
    assert read["boxes"] == [{"category": 2, "bbox": [0.1, 0.2, 0.3, 0.4]}]


def test_splits_are_added_and_replaced_only_on_request(tmp_path):
    write_dataset(_records(4), tmp_path, "multi", class_names=["a", "b", "c"])
    write_dataset(_records(2), tmp_path, "multi", split="validation", class_names=["a", "b", "c"])
    assert len(tfds_source("multi", "train", tmp_path)) == 4
    assert len(tfds_source("multi", "validation", tmp_path)) == 2
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(_records(3), tmp_path, "multi", split="validation")
    with pytest.raises(ValueError, match="differ from the existing"):
        write_dataset(_records(3), tmp_path, "multi", split="test", class_names=["x", "y", "z"])
    write_dataset(_records(3), tmp_path, "multi", split="validation", overwrite=True)
    assert len(tfds_source("multi", "validation", tmp_path)) == 3
    assert len(tfds_source("multi", "train", tmp_path)) == 4


def test_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="snake_case"):
        write_dataset(_records(1), tmp_path, "Bad-Name")
    with pytest.raises(ValueError, match="TFDS catalogue"):
        write_dataset(_records(1), tmp_path, "mnist")
    with pytest.raises(ValueError, match="no usable records.*x: broken"):
        write_dataset([BadRecord("x", "broken")], tmp_path, "empty")
    assert not (tmp_path / "empty").exists()
    with pytest.raises(ValueError, match="the input was empty"):
        write_dataset([], tmp_path, "empty")


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'absent' is not prepared .*tfds build absent"):
        tfds_source("absent", data_dir=tmp_path)
    write_dataset(_records(2), tmp_path, "here")
    with pytest.raises(ValueError, match="'here'.*split 'test'"):
        tfds_source("here", "test", tmp_path)
    with pytest.raises(KeyError, match="lable"):
        tfds_source("here", data_dir=tmp_path, label_key="lable")
    # An unknown config or version lists what is prepared (not tfds' catalogue of every dataset).
    for missing in ("here/nosuch", "here:2.0.0", "here/nosuch:1.0.0"):
        with pytest.raises(ValueError, match=rf"'{missing}': no such config or version .* found here:1.0.0$"):
            tfds_source(missing, data_dir=tmp_path)
    assert len(tfds_source("here:1.0.0", data_dir=tmp_path)) == 2
    assert "caption" not in tfds_source("here", data_dir=tmp_path, caption_key=None)[0]


# ------------------------------------------------------------------------------------ the converter

def _build(argv) -> int:
    return cli.main(["data", "build", *argv])


def _folder_with_broken_files(tmp_path):
    broken = broken_files()
    files = {"cat/a.jpg": encode(solid((200, 0, 0)), "JPEG"), "cat/a.txt": b"a cat",
             "dog/b.png": encode(solid((0, 200, 0)), "PNG"), "dog/c.webp": encode(solid((0, 0, 9)), "WEBP"),
             "dog/empty.jpg": broken["empty.jpg"], "cat/truncated.jpg": broken["truncated.jpg"],
             "cat/renamed.jpg": broken["text_named.jpg"]}
    return write_image_folder(tmp_path / "My Pets", files), files


def test_converter_from_folder_skips_and_names_bad_files(tmp_path, capsys):
    root, files = _folder_with_broken_files(tmp_path)
    out = tmp_path / "tfds"
    assert _build(["--from", "folder", "--out", str(out), "--workers", "1", str(root)]) == 0
    printed = capsys.readouterr().out
    for bad in ("dog/empty.jpg", "cat/truncated.jpg", "cat/renamed.jpg"):
        assert printed.count(f"skipped {bad}:") == 1
    assert "wrote 3 records" in printed and "skipped 3 bad record(s)" in printed
    source = tfds_source("my_pets", data_dir=out)  # the name comes from the folder
    assert source.classes == ["cat", "dog"]
    read = {source[i]["key"]: source[i] for i in range(len(source))}
    assert sorted(read) == ["cat/a.jpg", "dog/b.png", "dog/c.webp"]
    for key, record in read.items():
        assert record["image"] == files[key]
    assert read["cat/a.jpg"]["caption"] == "a cat" and read["cat/a.jpg"]["label"] == 0
    assert read["dog/b.png"]["label"] == 1


def test_build_dataset_writes_what_decodes(tmp_path):
    root, files = _folder_with_broken_files(tmp_path)
    written = build.build_dataset(ImageFolderSource(root), tmp_path / "tfds", "pets", split="test")
    assert written.num_records == 3 and written.split == "test"
    assert sorted(key for key, _ in written.skipped) == ["cat/renamed.jpg", "cat/truncated.jpg", "dog/empty.jpg"]
    assert tfds_source("pets", "test", tmp_path / "tfds").classes == ["cat", "dog"]


def test_converter_from_tar_with_worker_processes(tmp_path, capsys):
    members = laion_members(["k0", "k1", "k2"])
    write_tar(tmp_path / "s" / "00000.tar", [m for m in members if m[0] != "k1.jpg"])
    second = write_tar(tmp_path / "s" / "00001.tar", laion_members(["k3", "k4"]))
    second.write_bytes(second.read_bytes()[:4700])  # k4's image is cut off
    argv = ["--from", "tar", "--out", str(tmp_path / "tfds"), "--name", "laion_mini", "--num-shards", "2",
            "--workers", "2", str(tmp_path / "s" / "{00000..00001}.tar")]
    with pytest.warns(RuntimeWarning, match="00001.tar"):
        assert _build(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped 00000/k1: no image member") == 1
    assert "damaged shard" in printed and "wrote 3 records" in printed
    source = tfds_source("laion_mini", data_dir=tmp_path / "tfds")
    assert [source[i]["key"] for i in range(len(source))] == ["00000/k0", "00000/k2", "00001/k3"]
    assert source[2]["caption"] == "caption k3" and source[2]["meta"]["punsafe"] == 0.01
    assert source[0]["image"] == dict(members)["k0.jpg"]


def test_converter_errors_and_help(tmp_path, capsys):
    assert _build(["--from", "folder", "--out", str(tmp_path), str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert _build(["--from", "tar", "--out", str(tmp_path), str(tmp_path / "*.tar")]) == 1
    assert "no tar shards match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _build(["--help"])
    assert "ldm-jax data build --from folder" in capsys.readouterr().out


def test_default_names():
    assert build.default_name("/data/My Pets/") == "my_pets"
    assert build.default_name("/data/laion-400m/{00000..00009}.tar", "tar") == "laion_400m"
    assert build.default_name("/data/2024/x.tar", "tar") == "dataset_2024"
    assert build.default_name("/") == "dataset"
