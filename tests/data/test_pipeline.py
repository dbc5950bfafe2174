"""The grain input pipeline: sharding, epochs, bad records, resumable state, global batches."""
import collections
import json

import jax
import numpy as np
import pytest

from ldm_jax.data.pipeline import (BadExample, StreamOrder, TooManyBadRecords, example_rng, make_pipeline,
                                   stack_examples, to_global_batch)
from ldm_jax.data.records import BadRecord
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.data.transforms import ImageTransform


class ToySource:
    """Records "toy/000", ... holding a 4x4 image of their index; some fail to read."""

    def __init__(self, num_records: int, unreadable=()):
        self.num_records = num_records
        self.unreadable = frozenset(unreadable)

    def __len__(self):
        return self.num_records

    def __getitem__(self, index):
        key = f"toy/{index:03d}"
        if index in self.unreadable:
            raise BadRecord(key, "truncated file")
        return {"key": key, "image": np.full((4, 4, 3), index % 256, np.uint8), "label": index,
                "caption": f"record {index}"}


class ToyTransform:
    """Scales the image to floats plus a random offset; records whose label is in `broken` fail."""

    def __init__(self, broken=()):
        self.broken = frozenset(broken)

    def __call__(self, record, rng):
        if record["label"] in self.broken:
            raise BadRecord(record["key"], "cannot decode")
        image = record["image"].astype(np.float32) / 255 + np.float32(rng.uniform())
        return {"key": record["key"], "image": image, "label": record["label"], "caption": record["caption"]}


class SplitToyTransform(ToyTransform):
    """ToyTransform split in two: the uint8 pixels and the random offset travel, the consumer finishes."""

    def __call__(self, record, rng):
        raise AssertionError("a pipeline must use worker_example and finish_batch")

    def worker_example(self, record, rng):
        if record["label"] in self.broken:
            raise BadRecord(record["key"], "cannot decode")
        return {"key": record["key"], "image": record["image"], "offset": np.float32(rng.uniform()),
                "label": record["label"], "caption": record["caption"]}

    def finish_batch(self, batch):
        finished = {field: value for field, value in batch.items() if field != "offset"}
        finished["image"] = batch["image"].astype(np.float32) / 255 + batch["offset"][:, None, None, None]
        return finished


def take(pipeline, count):
    return [next(pipeline) for _ in range(count)]


def keys_of(batches):
    return [key for batch in batches for key in batch["key"]]


def assert_batches_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert list(a["key"]) == list(b["key"])
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_stream_order_gives_every_record_once_per_epoch_across_processes():
    num_records, process_count, epochs = 11, 3, 3  # 11 records do not split evenly over 3 processes
    seen = collections.defaultdict(list)
    for process_index in range(process_count):
        order = StreamOrder(num_records, seed=7, shuffle=True, process_index=process_index,
                            process_count=process_count)
        for position in range(num_records * epochs // process_count + 1):
            if order.global_position(position) < num_records * epochs:
                epoch, record = order(position)
                seen[epoch].append(record)
    assert sorted(seen) == list(range(epochs))
    for epoch in range(epochs):
        assert sorted(seen[epoch]) == list(range(num_records)), epoch
    orders = [[StreamOrder(num_records, 7, True, 0, 1)(e * num_records + i)[1] for i in range(num_records)]
              for e in range(epochs)]
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch


@pytest.mark.parametrize("worker_count", [0, 1])
def test_every_good_record_arrives_once_across_two_processes(worker_count):
    source = ToySource(30, unreadable={4})
    transform = ToyTransform(broken={0, 9, 17})
    arrived, bad = [], []
    for process_index in range(2):
        with make_pipeline(source, transform, batch_size=8, seed=3, num_epochs=1, worker_count=worker_count,
                           process_index=process_index, process_count=2, drop_remainder=False,
                           max_bad_fraction=0.5, min_records_before_check=1) as pipeline:
            batches = list(pipeline)
            assert all(len(batch["key"]) == 4 for batch in batches[:-1])  # full batches despite bad records
            arrived += keys_of(batches)
            statistics = pipeline.statistics()
        assert statistics["records_read"] == 15
        bad += [item["key"] for item in statistics["first_bad"]]
        assert statistics["bad_records"] == len(statistics["first_bad"])
    good = {f"toy/{i:03d}" for i in range(30)} - {"toy/004", "toy/000", "toy/009", "toy/017"}
    assert sorted(arrived) == sorted(good)  # each exactly once, none from another process twice
    assert sorted(bad) == ["toy/000", "toy/004", "toy/009", "toy/017"]


def test_batches_hold_numeric_arrays_and_string_arrays():
    pipeline = make_pipeline(ToySource(8), ToyTransform(), batch_size=4, seed=0, process_index=0,
                             process_count=1)
    batch = next(pipeline)
    pipeline.close()
    assert batch["image"].shape == (4, 4, 4, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["key"].dtype == object and batch["key"].shape == (4,)
    assert all(caption == f"record {label}" for caption, label in zip(batch["caption"], batch["label"]))


def test_too_many_bad_records_raise_a_clear_error():
    pipeline = make_pipeline(ToySource(40), ToyTransform(broken=set(range(0, 40, 3))), batch_size=4, seed=0,
                             process_index=0, process_count=1, max_bad_fraction=0.1, min_records_before_check=20)
    with pytest.raises(TooManyBadRecords, match=r"of 2\d records read .* were bad .*toy/\d{3}.*cannot decode"):
        take(pipeline, 10)
    pipeline.close()


def test_bad_records_below_the_threshold_are_skipped_and_logged(caplog):
    pipeline = make_pipeline(ToySource(40), ToyTransform(broken={5}), batch_size=4, seed=0, num_epochs=2,
                             process_index=0, process_count=1, drop_remainder=False, max_bad_fraction=0.05,
                             min_records_before_check=10)
    with caplog.at_level("WARNING", logger="ldm_jax.data.pipeline"):
        keys = keys_of(list(pipeline))
    pipeline.close()
    assert len(keys) == 78 and "toy/005" not in keys
    assert pipeline.statistics()["bad_records"] == 2  # once per epoch
    assert sum("toy/005" in message for message in caplog.messages) == 1  # logged once


@pytest.mark.parametrize("worker_count", [0, 1])
def test_resuming_from_a_saved_state_continues_with_the_next_batch(worker_count):
    source, transform = ToySource(13), ToyTransform(broken={2, 11})
    options = dict(batch_size=6, seed=5, process_index=1, process_count=2, max_bad_fraction=0.5,
                   min_records_before_check=1)
    with make_pipeline(source, transform, **options) as uninterrupted:
        reference = take(uninterrupted, 6)  # three passes over this process's share
        reference_statistics = uninterrupted.statistics()
    with make_pipeline(source, transform, worker_count=worker_count, **options) as interrupted:
        assert_batches_equal(take(interrupted, 2), reference[:2])
        state = json.loads(json.dumps(interrupted.get_state()))
    with make_pipeline(source, transform, worker_count=worker_count, **options) as resumed:
        resumed.set_state(state)
        assert_batches_equal(take(resumed, 4), reference[2:])
        assert resumed.statistics() == reference_statistics


def test_set_state_rejects_a_state_of_another_stream():
    with make_pipeline(ToySource(10), ToyTransform(), batch_size=2, seed=1, process_index=0,
                       process_count=1) as pipeline:
        next(pipeline)
        state = pipeline.get_state()
    with make_pipeline(ToySource(10), ToyTransform(), batch_size=2, seed=2, process_index=0,
                       process_count=1) as other:
        with pytest.raises(ValueError, match="seed=1 .now 2"):
            other.set_state(state)


def test_same_seed_same_batches_other_seed_other_order():
    def run(seed):
        with make_pipeline(ToySource(16), ToyTransform(), batch_size=4, seed=seed, process_index=0,
                           process_count=1) as pipeline:
            return take(pipeline, 6)

    first, again, other = run(11), run(11), run(12)
    assert_batches_equal(again, first)
    assert keys_of(other) != keys_of(first)
    assert keys_of(first)[:16] != [f"toy/{i:03d}" for i in range(16)]  # shuffled


def test_per_record_randomness_does_not_depend_on_the_process_count():
    def images_by_key(process_count):
        images = {}
        for process_index in range(process_count):
            with make_pipeline(ToySource(8), ToyTransform(), batch_size=4, seed=9, num_epochs=1,
                               process_index=process_index, process_count=process_count) as pipeline:
                for batch in pipeline:
                    images.update(zip(batch["key"], batch["image"]))
        return images

    one, two = images_by_key(1), images_by_key(2)
    assert sorted(one) == sorted(two)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


def test_make_pipeline_checks_its_arguments():
    with pytest.raises(ValueError, match="multiple of process_count 4"):
        make_pipeline(ToySource(8), None, batch_size=6, seed=0, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="holds no records"):
        make_pipeline(ToySource(0), None, batch_size=2, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="process_index 2"):
        make_pipeline(ToySource(8), None, batch_size=2, seed=0, process_index=2, process_count=2)


def test_stack_examples_reports_mismatched_fields_and_shapes():
    with pytest.raises(ValueError, match="different fields"):
        stack_examples([{"image": np.zeros(2)}, {"image": np.zeros(2), "label": 1}])
    with pytest.raises(ValueError, match="'image' has different shapes"):
        stack_examples([{"image": np.zeros(2)}, {"image": np.zeros(3)}])
    batch = stack_examples([{"boxes": [1]}, {"boxes": []}])
    assert batch["boxes"] == [[1], []]
    assert BadExample("k", "r") == BadExample("k", "r")


def test_to_global_batch_shards_numeric_fields_over_the_mesh():
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), devices=jax.devices()[:8])
    with make_pipeline(ToySource(16), ToyTransform(), batch_size=16, seed=0, process_index=0,
                       process_count=1) as pipeline:
        batch = next(pipeline)
    global_batch = to_global_batch(batch, mesh)
    image, label = global_batch["image"], global_batch["label"]
    assert image.shape == (16, 4, 4, 3) and label.shape == (16,) and label.dtype == np.int32
    assert image.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert len(image.addressable_shards) == 8 and image.addressable_shards[0].data.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(np.asarray(image), batch["image"])
    assert global_batch["key"] is batch["key"]  # strings stay on the host
    by_data = to_global_batch(batch, mesh, jax.sharding.PartitionSpec("data", "fsdp"))
    assert by_data["image"].sharding.spec == jax.sharding.PartitionSpec("data", "fsdp")
    assert by_data["label"].sharding.spec == jax.sharding.PartitionSpec("data")


@pytest.mark.parametrize("worker_count", [0, 1])
def test_a_split_transform_gives_the_batches_of_the_whole_transform(worker_count):
    source = ToySource(20)
    options = dict(batch_size=6, seed=2, process_index=0, process_count=1, max_bad_fraction=0.5,
                   min_records_before_check=1)
    with make_pipeline(source, ToyTransform(broken={3, 8}), **options) as whole:
        expected = take(whole, 5)  # batches cut across chunks with bad records, into the second epoch
        expected_bad = whole.statistics()["bad_records"]
    with make_pipeline(source, SplitToyTransform(broken={3, 8}), worker_count=worker_count, **options) as split:
        batches = take(split, 5)
        assert split.statistics()["bad_records"] == expected_bad >= 2
    assert_batches_equal(batches, expected)
    assert all("offset" not in batch and batch["image"].dtype == np.float32 for batch in batches)


def test_image_transform_batches_equal_its_direct_calls():
    source, transform = SyntheticShapes(6, image_size=20), ImageTransform(16, random_crop=True, flip=True)
    with make_pipeline(source, transform, batch_size=3, seed=4, shuffle=False, num_epochs=1, process_index=0,
                       process_count=1) as pipeline:
        batches = list(pipeline)
    direct = [transform(source[index], example_rng(4, 0, index)) for index in range(6)]
    np.testing.assert_array_equal(np.concatenate([batch["image"] for batch in batches]),
                                  np.stack([example["image"] for example in direct]))
    assert batches[0]["image"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([batch["segmentation"] for batch in batches]),
                                  np.stack([example["segmentation"] for example in direct]))
