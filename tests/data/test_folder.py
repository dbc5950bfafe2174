"""ImageFolderSource: sorted recursive listing, folder labels, sidecar captions, clear errors."""
import json
import pickle

import numpy as np
import pytest

from ldm_jax.data.decode import decode_image
from ldm_jax.data.folder import ImageFolderSource
from ldm_jax.data.folder_check import check_folder
from ldm_jax.data.records import BadRecord
from tests.data.make_files import broken_files, encode, solid, write_image_folder


def _classes_tree(tmp_path):
    files = {
        "dog/b.png": encode(solid((0, 200, 0)), "PNG"),
        "dog/nested/c.webp": encode(solid((0, 0, 200)), "WEBP", lossless=True),
        "cat/a.JPG": encode(solid((200, 0, 0)), "JPEG", quality=95),
        "cat/a.txt": b"  a red cat \n",
        "dog/b.json": json.dumps({"caption": "a green dog", "width": 8}).encode(),
        "dog/nested/c.json": json.dumps({"text": "a blue dog"}).encode(),
        "cat/notes.md": b"not an image",
        "cat/.hidden.jpg": b"mac resource fork",
        ".cache/x.png": encode(solid((1, 2, 3)), "PNG"),
        "cat/empty.jpg": broken_files()["empty.jpg"],
    }
    return write_image_folder(tmp_path / "pets", files), files


def test_class_folders_become_sorted_labels(tmp_path):
    root, files = _classes_tree(tmp_path)
    source = ImageFolderSource(root)
    assert source.classes == ["cat", "dog"]
    keys = [source[i]["key"] for i in range(len(source))]
    assert keys == ["cat/a.JPG", "cat/empty.jpg", "dog/b.png", "dog/nested/c.webp"]  # sorted, hidden skipped
    labels = [source[i]["label"] for i in range(len(source))]
    assert labels == [0, 0, 1, 1]
    for i in range(len(source)):
        assert source[i]["image"] == files[source[i]["key"]]  # raw bytes, decoded later


def test_captions_come_from_txt_or_json_sidecars(tmp_path):
    root, _ = _classes_tree(tmp_path)
    records = {record["key"]: record for record in (ImageFolderSource(root)[i] for i in range(4))}
    assert records["cat/a.JPG"]["caption"] == "a red cat"
    assert records["dog/b.png"]["caption"] == "a green dog"
    assert records["dog/b.png"]["meta"] == {"width": 8}
    assert records["dog/nested/c.webp"]["caption"] == "a blue dog"
    assert "caption" not in records["cat/empty.jpg"]


def test_items_decode_and_broken_files_fail_only_when_decoded(tmp_path):
    root, _ = _classes_tree(tmp_path)
    source = ImageFolderSource(root)
    assert decode_image(source[0]["image"], source[0]["key"])[0, 0, 0] > 190
    with pytest.raises(BadRecord, match="empty file"):
        decode_image(source[1]["image"], source[1]["key"])


def test_images_in_the_root_mean_no_labels(tmp_path):
    root = write_image_folder(tmp_path / "mixed", {"top.png": encode(solid((1, 1, 1)), "PNG"),
                                                   "sub/x.png": encode(solid((2, 2, 2)), "PNG")})
    auto = ImageFolderSource(root)
    assert auto.classes == [] and "label" not in auto[0]
    with pytest.raises(ValueError, match="top.png"):
        ImageFolderSource(root, labels="folders")
    unlabelled = ImageFolderSource(tmp_path / "mixed", labels="none")
    assert [unlabelled[i]["key"] for i in range(2)] == ["sub/x.png", "top.png"]


def test_labels_none_and_custom_extensions(tmp_path):
    root, _ = _classes_tree(tmp_path)
    source = ImageFolderSource(root, labels="none", extensions=("png",))
    assert len(source) == 1 and source.classes == [] and "label" not in source[0]
    assert source[0]["key"] == "dog/b.png"


def test_order_is_deterministic_and_survives_pickling(tmp_path):
    root, _ = _classes_tree(tmp_path)
    first, second = ImageFolderSource(root), ImageFolderSource(str(root))
    copy = pickle.loads(pickle.dumps(first))
    for i in range(len(first)):
        assert first[i] == second[i] == copy[i]
    with pytest.raises(IndexError):
        first[len(first)]


def test_bad_json_sidecar_is_a_bad_record(tmp_path):
    root = write_image_folder(tmp_path / "f", {"x.png": encode(solid((1, 1, 1)), "PNG"), "x.json": b"{not json"})
    with pytest.raises(BadRecord, match="not valid JSON") as caught:
        ImageFolderSource(root)[0]
    assert caught.value.key == "x.png"


def test_missing_root_file_root_and_no_images_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSource(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        ImageFolderSource(tmp_path / "file.png")
    write_image_folder(tmp_path / "texts", {"a.txt": b"hello", "b/c.json": b"{}"})
    with pytest.raises(FileNotFoundError, match=r"no images found .*\.jpg, \.jpeg, \.png, \.webp, \.bmp, \.gif"):
        ImageFolderSource(tmp_path / "texts")
    with pytest.raises(ValueError, match="labels must be one of"):
        ImageFolderSource(tmp_path / "texts", labels="yes")


def test_decoded_colours_match_the_files(tmp_path):
    root, _ = _classes_tree(tmp_path)
    source = ImageFolderSource(root)
    np.testing.assert_array_equal(decode_image(source[2]["image"], "b")[0, 0], (0, 200, 0))
    np.testing.assert_array_equal(decode_image(source[3]["image"], "c")[0, 0], (0, 0, 200))


def _many(tmp_path, per_class=(20, 9)):
    files = {f"{name}/{index:02d}.png": encode(solid((index, 0, 0)), "PNG")
             for name, count in zip(("cat", "dog"), per_class) for index in range(count)}
    return write_image_folder(tmp_path / "many", files)


def test_heldout_split_is_stratified_disjoint_and_stable(tmp_path):
    root = _many(tmp_path)
    train = ImageFolderSource(root, split="train", heldout_fraction=0.1)
    heldout = ImageFolderSource(root, split="validation", heldout_fraction=0.1)
    train_keys = {train[i]["key"] for i in range(len(train))}
    heldout_keys = [heldout[i]["key"] for i in range(len(heldout))]
    assert len(heldout) == 2 + 1  # 10% of each class, rounded up: 2 of 20 cats, 1 of 9 dogs
    assert sorted(k.split("/")[0] for k in heldout_keys) == ["cat", "cat", "dog"]
    assert train_keys.isdisjoint(heldout_keys) and len(train_keys) + len(heldout_keys) == 29
    assert heldout.classes == train.classes == ["cat", "dog"]  # labels keep their meaning in both splits
    assert {heldout[i]["class_name"] for i in range(len(heldout))} == {"cat", "dog"}
    # Chosen by the paths' hashes, not their order: a new file moves at most one held-out image.
    (root / "cat" / "00a.png").write_bytes(encode(solid((1, 2, 3)), "PNG"))
    again = ImageFolderSource(root, split="validation", heldout_fraction=0.1)
    assert len(set(heldout_keys) - {again[i]["key"] for i in range(len(again))}) <= 1
    assert len(ImageFolderSource(root)) == 30  # no fraction: everything is "train"
    with pytest.raises(ValueError, match="needs heldout_fraction > 0"):
        ImageFolderSource(root, split="validation")
    with pytest.raises(ValueError, match="split must be one of"):
        ImageFolderSource(root, split="test", heldout_fraction=0.1)


def test_folder_check_counts_what_a_run_would_meet(tmp_path):
    files = {"cat/a.png": encode(solid((9, 9, 9), size=(8, 6)), "PNG"),
             "cat/a.txt": b"a grey cat",
             "cat/b.png": encode(solid(120, size=(28, 28), mode="L"), "PNG"),
             "dog/c.jpg": broken_files()["empty.jpg"],
             "dog/d.png": encode(solid((200, 0, 0), size=(30, 40)), "PNG")}
    check = check_folder(write_image_folder(tmp_path / "pets", files))
    assert check.num_readable == 3 and list(check.unreadable) == ["dog/c.jpg"]
    assert check.class_counts == {"cat": 2, "dog": 1} and check.has_classes
    assert check.num_captioned == 1 and not check.all_captioned
    assert check.num_greyscale == 2 and check.smallest_side == 6  # solid grey RGB reads as greyscale too
    assert "3 readable images, 1 unreadable (dog/c.jpg) in 2 classes (1-2 images each)" in check.describe()
