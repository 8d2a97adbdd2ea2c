import numpy as np
import pytest

from avatar_jax.data import index, loader
from avatar_jax.errors import InputError

from .fake import fake_clip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for s, subject in enumerate(["alice", "bob", "carol"]):
        for c in range(4):
            fake_clip(root, f"{subject}{c}", subject, 20 + 3 * c + s, seed=c)
    index.build_index(str(root), held_out=0.25)
    return str(root)


def _key(batch):
    return list(zip(batch["clip"].tolist(), batch["start"].tolist(), strict=True))


def test_windows_carry_their_exact_audio_span_and_keypoints(dataset):
    source = loader.WindowSource(dataset, "train", seq_len=6, stride=3)
    assert source.audio_len == 6 * 640
    item = source[len(source) - 1]
    t0 = int(item["start"])
    assert item["frame"].shape == (6, 8, 10, 3) and item["audio"].shape == (6 * 640,)
    np.testing.assert_array_equal(item["frame"][:, 0, 0, 0], np.arange(t0, t0 + 6))
    np.testing.assert_array_equal(item["index"], np.arange(t0, t0 + 6))
    np.testing.assert_array_equal(item["hands"][:, 1, 20, 0], np.arange(t0, t0 + 6))
    # audio sample s of a clip was written as s / 1e5: the window holds samples [t0*640, (t0+6)*640)
    np.testing.assert_allclose(item["audio"] * 1e5, np.arange(t0 * 640, (t0 + 6) * 640), atol=0.02)
    train_subjects = {source.metas[w.clip].subject_id for w in source.windows}
    assert train_subjects == {"alice", "bob", "carol"}
    test_ids = set(loader.WindowSource(dataset, "test", seq_len=6).clip_ids)
    assert test_ids.isdisjoint(source.clip_ids) and len(test_ids) == 3  # one held-out clip per identity


def test_batches_shuffle_with_seed_and_shard_per_host(dataset):
    source = loader.WindowSource(dataset, "train", seq_len=5)
    ds0 = loader.make_dataset(source, batch_size=4, seed=3, shard_index=0, shard_count=2, num_epochs=1)
    ds1 = loader.make_dataset(source, batch_size=4, seed=3, shard_index=1, shard_count=2, num_epochs=1)
    seen0 = [k for b in ds0 for k in _key(b)]
    seen1 = [k for b in ds1 for k in _key(b)]
    assert set(seen0).isdisjoint(seen1)
    assert len(seen0) == len(seen1) == (len(source) // 2) // 4 * 4
    again = [k for b in loader.make_dataset(source, batch_size=4, seed=3, shard_index=0, shard_count=2,
                                            num_epochs=1) for k in _key(b)]
    other = [k for b in loader.make_dataset(source, batch_size=4, seed=4, shard_index=0, shard_count=2,
                                            num_epochs=1) for k in _key(b)]
    assert again == seen0 and other != seen0
    batch = next(iter(ds0))
    assert batch["frame"].shape == (4, 5, 8, 10, 3) and batch["audio"].shape == (4, 5 * 640)
    assert batch["K"].shape == (4, 3, 3) and batch["subject"].dtype == np.int32


def test_resumed_iterator_sees_the_exact_same_next_batches(dataset, tmp_path):
    source = loader.WindowSource(dataset, "train", seq_len=4)
    ds = loader.make_dataset(source, batch_size=3, seed=7, shard_index=0, shard_count=1)
    it = iter(ds)
    epoch_windows = len(source) // 3
    for _ in range(epoch_windows - 2):  # stop close to an epoch boundary, so the resume crosses it
        next(it)
    loader.save_state(it, str(tmp_path / "state.json"))
    expected = [next(it) for _ in range(5)]
    fresh = iter(loader.make_dataset(source, batch_size=3, seed=7, shard_index=0, shard_count=1))
    loader.restore_state(fresh, str(tmp_path / "state.json"))
    for want in expected:
        got = next(fresh)
        assert _key(got) == _key(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_loader_refuses_impossible_requests(dataset):
    with pytest.raises(InputError):
        loader.WindowSource(dataset, "train", seq_len=1000)
    with pytest.raises(InputError):
        loader.make_loader(dataset, split="test", seq_len=4, batch_size=512, shard_index=0, shard_count=1)
    with pytest.raises(InputError):
        loader.WindowSource(dataset, "validation")


def test_batches_do_not_depend_on_read_threads_or_prefetch(dataset):
    """Reproducible training needs the same batches run to run: grain's read threads and prefetch buffer only
    change when a window is read, never which one lands in which row (every field compared bitwise)."""
    source = loader.WindowSource(dataset, "train", seq_len=4)

    def first_batches(num_threads, prefetch):
        it = iter(loader.make_dataset(source, batch_size=3, seed=5, shard_index=0, shard_count=1,
                                      num_threads=num_threads, prefetch=prefetch))
        return [next(it) for _ in range(len(source) // 3 + 2)]  # past an epoch boundary (reshuffled)

    want = first_batches(0, 0)
    for threads, prefetch in [(1, 1), (4, 8), (4, 8)]:
        got = first_batches(threads, prefetch)
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            for k in w:
                np.testing.assert_array_equal(g[k], w[k], err_msg=f"{k} with {threads} threads")
    keys = [k for b in want for k in _key(b)]
    assert len(set(keys[: len(source) // 3 * 3])) == len(source) // 3 * 3  # one epoch: each window at most once
