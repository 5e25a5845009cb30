import numpy as np
import pytest

from metals.common.metrics import classification_report

NAMES = ["normal", "dos", "probe"]


def test_report_values_on_known_predictions():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])

    report = classification_report(y_true, y_pred, NAMES)

    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["recall"] == pytest.approx({"normal": 2 / 3, "dos": 1.0, "probe": 0.0})
    assert report["precision"] == pytest.approx({"normal": 2 / 3, "dos": 2 / 3, "probe": 0.0})
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)


def test_report_keys_every_class_even_absent():
    report = classification_report(np.array([0, 1]), np.array([0, 1]), NAMES)

    assert set(report["recall"]) == set(NAMES)
    assert report["support"]["probe"] == 0
    assert report["macro_f1"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (np.array([], dtype=int), np.array([], dtype=int), "at least one"),
        (np.array([0, 1]), np.array([0]), "as many"),
        (np.array([0, 3]), np.array([0, 1]), "outside 0..2"),
    ],
)
def test_report_rejects_bad_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        classification_report(y_true, y_pred, NAMES)


def test_report_matches_scikit_learn_on_random_predictions():
    # Prepare: five classes, one never true and one never predicted.
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = np.random.default_rng(7)
    names = ["a", "b", "c", "d", "e"]
    y_true = generator.choice([0, 1, 2, 4], size=500)
    y_pred = generator.choice([0, 1, 3, 4], size=500)
    labels = np.arange(len(names))

    # Execute
    report = classification_report(y_true, y_pred, names)

    # Assert
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert list(report["precision"].values()) == pytest.approx(list(precision))
    assert list(report["recall"].values()) == pytest.approx(list(recall))
    assert list(report["f1"].values()) == pytest.approx(list(f1))
    assert list(report["support"].values()) == list(support)
    expected_matrix = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=labels)
    assert report["confusion_matrix"] == expected_matrix.tolist()
