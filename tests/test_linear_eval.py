import numpy as np
import pytest

from hear_diffbyola.tasks.linear_eval import (
    LinearEvalConfig,
    linear_eval,
    linear_eval_seeds,
    standardise,
    stratified_split,
)


def difference_only(rng, n_per_class, k=4, d=16):
    """y_mix independent of the label; y_bg = y_mix - code(label) - noise: the label is only in the difference."""
    y = np.repeat(np.arange(k), n_per_class)
    codes = rng.standard_normal((k, d)) * 2.0
    mix = rng.standard_normal((y.size, d))
    bg = mix - codes[y] - 0.1 * rng.standard_normal((y.size, d))
    return mix, bg, y


def test_label_only_in_the_difference_diff_near_100_mix_near_chance():
    rng = np.random.default_rng(0)
    mix_tr, bg_tr, y_tr = difference_only(rng, 60)
    mix_te, bg_te, y_te = difference_only(np.random.default_rng(1), 50)
    # the test split must reuse the training codes: rebuild its backgrounds with them
    codes = (mix_tr - bg_tr)[[np.flatnonzero(y_tr == c)[0] for c in range(4)]]
    bg_te = mix_te - codes[y_te] - 0.1 * np.random.default_rng(2).standard_normal(mix_te.shape)
    diff = linear_eval_seeds(mix_tr - bg_tr, y_tr, mix_te - bg_te, y_te, seeds=(0, 1))
    mix = linear_eval_seeds(mix_tr, y_tr, mix_te, y_te, seeds=(0, 1))
    assert diff.mean >= 95.0, diff
    assert mix.mean <= 25.0 + 15.0, mix  # chance is 25 %; 200 test items keep the spread well under 15 points
    assert len(diff.accuracies) == 2 and diff.std == pytest.approx(np.std(diff.accuracies))


def test_separable_one_dimensional_problem_is_solved_exactly():
    x = np.concatenate([np.linspace(-3, -1, 50), np.linspace(1, 3, 50)])[:, None]
    y = np.repeat([0, 1], 50)
    r = linear_eval(x, y, np.array([[-2.0], [-0.5], [0.5], [2.5]]), np.array([0, 0, 1, 1]), seed=0)
    assert r.accuracy == 1.0


def test_same_seed_same_result_and_seeds_change_the_run():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((80, 6)), rng.integers(0, 3, 80)
    xt, yt = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    cfg = LinearEvalConfig(max_epochs=30)
    assert linear_eval(x, y, xt, yt, seed=3, config=cfg) == linear_eval(x, y, xt, yt, seed=3, config=cfg)
    runs = {linear_eval(x, y, xt, yt, seed=s, config=cfg).best_valid_loss for s in range(4)}
    assert len(runs) > 1


def test_early_stopping_stops_patience_epochs_after_the_best_validation_loss():
    # random labels: the validation loss stops improving early, so training ends well before max_epochs
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((200, 50)), rng.integers(0, 2, 200)
    cfg = LinearEvalConfig(max_epochs=200, patience=7)
    r = linear_eval(x, y, x[:10], y[:10], seed=0, config=cfg)
    assert r.epochs_run < 200
    assert r.epochs_run == r.best_epoch + cfg.patience


def test_stratified_split_takes_a_tenth_of_each_class():
    y = np.array([0] * 30 + [1] * 10 + [2] * 2 + [3])
    tr, va = stratified_split(y, 0.1, np.random.default_rng(0))
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).tolist() == list(range(y.size))
    counts = {c: int((y[va] == c).sum()) for c in range(4)}
    assert counts == {0: 3, 1: 1, 2: 1, 3: 0}  # at least one when possible, never a whole class


def test_standardise_uses_training_stats_and_survives_constant_features():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    test = np.array([[2.0, 7.0]])
    s_train, s_test = standardise(train, test)
    np.testing.assert_allclose(s_train, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(s_test, [[0.0, 2.0]])


def test_bad_inputs_are_named():
    x, y = np.zeros((10, 3)), np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="training set: labels must be"):
        linear_eval(x, y[:5], x, y)
    with pytest.raises(ValueError, match="integer class indices"):
        linear_eval(x, y.astype(float), x, y)
    with pytest.raises(ValueError, match="NaN"):
        linear_eval(np.full((10, 3), np.nan), y, x, y)
    with pytest.raises(ValueError, match="3 dimensions, test features 2"):
        linear_eval(x, y, x[:, :2], y)
    with pytest.raises(ValueError, match="valid_fraction"):
        LinearEvalConfig(valid_fraction=1.0)


# ----------------------------------------------------------------------------------------------------------
# the shared early-stopping loop (tasks.early_stopping)


def scripted(losses):
    """A one-parameter model whose weight is set to the epoch number by each training epoch, and a
    validation loss read from the script: the restored weight tells which epoch's state came back."""
    import torch

    model = torch.nn.Linear(1, 1, bias=False)
    modes = []

    def train_epoch(epoch):
        modes.append(("train", model.training))
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        return 10.0 * epoch

    def validate():
        modes.append(("val", model.training))
        return losses[int(model.weight.item()) - 1]

    return model, train_epoch, validate, modes


# (scripted validation losses, patience, max epochs, best epoch, epochs run), worked out by hand
@pytest.mark.parametrize(
    "losses,patience,max_epochs,best_epoch,epochs_run",
    [
        ([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 3.0, 2.0, 1.0], 3, 9, 3, 6),  # epoch 7 equals the best: too late anyway
        ([5.0, 4.0, 3.0, 3.5, 3.2, 2.9, 3.0, 2.0, 1.0], 3, 9, 9, 9),  # a new minimum at 6 resets the count
        ([5.0, 4.0, 3.0, 3.0, 3.0, 2.0], 3, 6, 6, 6),  # equal to the best is not better...
        ([5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 2.0], 3, 7, 3, 6),  # ...so three ties in a row stop it
        ([1.0, 2.0, 3.0, 4.0, 5.0], 1, 5, 1, 2),  # patience 1: stop at the first worse epoch
        ([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 1.0], 0, 7, 7, 7),  # patience 0: run every epoch
        ([3.0, 2.0, 1.0, 0.5], 10, 3, 3, 3),  # max_epochs first
        ([float("nan"), 2.0, 3.0, 1.5, 4.0, 4.0], 2, 6, 4, 6),  # NaN never counts as better
    ],
)
def test_early_stopping_stops_after_patience_and_restores_the_best_state(
    losses, patience, max_epochs, best_epoch, epochs_run
):
    from hear_diffbyola.tasks.early_stopping import fit_early_stopping

    model, train_epoch, validate, modes = scripted(losses)
    fit = fit_early_stopping(model, train_epoch, validate, patience, max_epochs)
    assert (fit.best_epoch, fit.epochs_run) == (best_epoch, epochs_run)
    assert model.weight.item() == best_epoch and fit.best_state["weight"].item() == best_epoch  # that epoch's state
    assert [r["epoch"] for r in fit.curve] == list(range(1, epochs_run + 1))
    np.testing.assert_array_equal([r["val_loss"] for r in fit.curve], losses[:epochs_run])
    assert [r["train_loss"] for r in fit.curve] == [10.0 * e for e in range(1, epochs_run + 1)]
    assert fit.best == fit.curve[best_epoch - 1]
    assert set(modes) == {("train", True), ("val", False)} and not model.training  # train mode only to train


def test_early_stopping_with_metrics_and_a_custom_rank_and_a_never_finite_loss():
    from hear_diffbyola.tasks import TaskError
    from hear_diffbyola.tasks.early_stopping import fit_early_stopping

    recall = [0.2, 0.5, 0.5, 0.4, 0.1]
    nce = [3.0, 2.0, 1.5, 1.0, 0.5]
    model, train_epoch, _, _ = scripted(nce)

    def validate():
        e = int(model.weight.item()) - 1
        return {"val_recall": recall[e], "val_nce": nce[e]}

    fit = fit_early_stopping(model, train_epoch, validate, 2, 5, rank=lambda r: (-r["val_recall"], r["val_nce"]))
    assert fit.best_epoch == 3 and fit.epochs_run == 5 and fit.best["val_recall"] == 0.5  # tie on recall: lower NCE
    model, train_epoch, _, _ = scripted([float("nan")] * 4)
    with pytest.raises(TaskError, match="never finite in 2 epoch"):
        fit_early_stopping(model, train_epoch, lambda: float("nan"), 2, 4)
