"""The motion study's teacher clips (real pauses after each sentence, in which the rig's mouth closes) and a
short point-supervised training that makes the model's lip gap follow the teacher's."""

import jax
import numpy as np
import pytest

from avatar_jax.config import load_config
from avatar_jax.data import rig, synthetic
from avatar_jax.eval import motion as scores
from avatar_jax.eval import motion_study

FPS = 25.0


@pytest.fixture(scope="module")
def small_rig():
    return rig.build_rig(synthetic.figure_from_avatar("synthetic", 600, seed=0), seed=0)


def test_teacher_pauses_are_found_and_the_rig_closes_the_mouth_in_them(small_rig):
    r = small_rig
    long = motion_study.long_clip(r, ["Hello there, it is really good to see you today.", "My name is Robin."],
                                  "en-us", FPS, seed=0, seconds=100.0, pause_s=0.6)
    frames = long["means"].shape[0]
    assert long["sentences"] == 2 and long["audio"].size == frames * 640
    pauses = scores.pause_frames(long["speech"], frames, FPS)
    # Two 0.6 s pauses (after each sentence) less 0.1 s margins: 0.4 s = 10 frames each. eSpeak's comma pause
    # (0.15 s) is shorter than 0.2 s, so it is not counted.
    assert pauses.sum() == 20, pauses.sum()
    upper, lower = motion_study.lip_sets(r)
    gap = scores.lip_gap(long["means"], r.figure.means.astype(np.float64), upper, lower)
    p95 = np.percentile(gap, 95)
    assert p95 > 3e-3  # the mouth really opens in speech (mm scale)
    s = scores.lip_scores(gap, gap, pauses)
    assert s["teacher_closed_in_silence"] == 1.0
    assert np.abs(gap[pauses]).max() < 0.05 * p95  # closed, not merely nearly so
    # the low-RMS rule also counts stop closures inside words, where the jaw is a quarter open
    rms_silent = scores.silent_frames(long["audio"], frames, 640) & ~pauses
    assert rms_silent.sum() > 0


def test_short_training_makes_the_lip_gap_follow_the_teacher(small_rig):
    r = small_rig
    c = load_config("tiny")
    with c.unlocked():
        c.model.d_model, c.model.num_heads = 16, 2
        c.model.particle_counts = dict(body=2, face=2, upper_lip=4, lower_lip=4, eyelids=2, hands=2)
        c.audio.embedded_dim, c.audio.embedded_width, c.audio.embedded_depth = 32, 32, 1
        c.motion_study.window_frames = 10
        c.motion_study.lip_gap_weight = 1.0
        c.motion_study.learning_rate = 3e-3
        c.motion_study.lr_schedule, c.motion_study.face_weight = "constant", 1.0
    clip = motion_study.teacher_clip(r, "Good morning, my name is Robin.", "en-us", FPS, seed=0, pause_s=0.4)
    frames = clip["means"].shape[0]
    order = np.argsort(np.asarray(r.figure.part), kind="stable")
    inv = np.argsort(order)
    upper, lower = motion_study.lip_sets(r)
    rest = r.figure.means.astype(np.float64)
    gap_teacher = scores.lip_gap(np.asarray(clip["means"]), rest, upper, lower)

    def lip_gap_of(steps):
        model, avatar, losses = motion_study.train_motion(c, r, [clip], steps)
        out, _ = jax.jit(lambda a: model(avatar, a, frames))(clip["audio"])
        return scores.lip_gap(np.asarray(out.means)[:, inv], rest, upper, lower), losses

    gap0, _ = lip_gap_of(0)
    gap1, losses = lip_gap_of(60)
    err0, err1 = np.abs(gap0 - gap_teacher).mean(), np.abs(gap1 - gap_teacher).mean()
    corr = np.corrcoef(gap1, gap_teacher)[0, 1]
    assert np.abs(gap0).max() < 1e-6  # untrained: the mouth stays at rest
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
    assert err1 < 0.7 * err0, (err0, err1)
    assert corr > 0.5, corr


def test_joint_prior_keeps_the_template_joints_near_rest(small_rig):
    """motion_study.joint_prior_weight (an L1 prior on the body template's joint rotations) shrinks them."""
    r = small_rig
    c = load_config("tiny")
    with c.unlocked():
        c.model.d_model, c.model.num_heads = 16, 2
        c.model.particle_counts = dict(body=2, face=2, upper_lip=2, lower_lip=2, eyelids=2, hands=2)
        c.audio.embedded_dim, c.audio.embedded_width, c.audio.embedded_depth = 32, 32, 1
        c.motion_study.window_frames = 10
        c.motion_study.learning_rate, c.motion_study.lr_schedule = 3e-3, "constant"
        # the prior alone, as it was measured (weight decay shrinks the rotations too; no audio context: 2x faster)
        c.motion_study.weight_decay, c.motion_study.audio_context_s = 0.0, 0.0
    clip = motion_study.teacher_clip(r, "Good morning, my name is Robin.", "en-us", FPS, seed=0, pause_s=0.4)
    frames = clip["means"].shape[0]

    def mean_rotation(weight):
        with c.unlocked():
            c.motion_study.joint_prior_weight = weight
        model, avatar, _ = motion_study.train_motion(c, r, [clip], 20)
        driving = model.driving(clip["audio"], frames)
        return float(np.abs(motion_study.joint_rotations(model, driving, model.motion.init_carry(avatar))).mean())

    free, held = mean_rotation(0.0), mean_rotation(10.0)
    assert free > 5e-4 and held < 0.5 * free, (free, held)


def test_optimizer_applies_the_weight_decay():
    """motion_study.weight_decay reaches the optimiser (AdamW): with no gradient, a step shrinks the weights by
    lr x decay; without it they stay; a negative decay is refused."""
    import jax.numpy as jnp
    import optax

    d = load_config("tiny").motion_study
    with d.unlocked():
        d.lr_schedule, d.learning_rate = "constant", 1e-2
    params = {"w": jnp.full((3,), 2.0)}
    for decay, expected in ((0.0, 2.0), (5.0, 2.0 * (1 - 1e-2 * 5.0))):
        with d.unlocked():
            d.weight_decay = decay
        opt = motion_study.optimizer(d, 10)
        updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
        np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], expected, rtol=1e-6)
    with d.unlocked():
        d.weight_decay = -1.0
    with pytest.raises(ValueError, match="weight_decay"):
        motion_study.optimizer(d, 10)


def test_training_clips_speak_each_sentence_in_several_training_voices(small_rig):
    c = load_config("tiny")
    with c.unlocked():
        c.motion_study.train_sentences, c.motion_study.voices_per_sentence = 2, 2
    texts = ["My name is Robin.", "Good morning."]
    clips = motion_study.training_clips(small_rig, c, texts)
    train_voices = list(c.motion_study.voices)[:-1]
    assert [(cl["text"], cl["voice"]) for cl in clips] == [
        (texts[0], train_voices[0]), (texts[0], train_voices[1]), (texts[1], train_voices[1]),
        (texts[1], train_voices[2])]
    assert c.motion_study.voices[-1] not in {cl["voice"] for cl in clips}  # the held-out voice stays unheard
    with c.unlocked():
        c.motion_study.voices_per_sentence = len(train_voices) + 1
    with pytest.raises(ValueError, match="voices_per_sentence"):
        motion_study.training_clips(small_rig, c, texts)
