"""Dataset loading, label mapping, column checks, Rotten Tomatoes splitting and collation."""

import bz2

import pandas as pd
import pytest
from conftest import make_tokenizer

from hfcompress import HfCompressError
from hfcompress.assets import build_rotten_tomatoes_splits
from hfcompress.data import DistillationDataCollator, load_text_classification, tokenize_dataset
from hfcompress.modeling import check_labels_fit


def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_local_csv_with_named_columns_and_string_labels(tmp_path):
    rows = [{"review": f"film number {i}", "sentiment": ["neg", "pos", "mixed"][i % 3]} for i in range(30)]
    path = write_csv(tmp_path / "data.csv", rows)
    data, labels = load_text_classification(str(path), text_column="review", label_column="sentiment")
    assert labels == ["mixed", "neg", "pos"]
    assert set(data) == {"train", "validation", "test"}
    assert data["train"].column_names == ["text", "label"]
    assert sum(len(d) for d in data.values()) == 30
    assert set(data["train"]["label"]) <= {0, 1, 2}


def test_missing_column_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "data.csv", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    with pytest.raises(
        HfCompressError, match="has no label column 'sentiment'; available columns: text, label"
    ):
        load_text_classification(str(path), label_column="sentiment")
    with pytest.raises(HfCompressError, match="has no text column 'review'"):
        load_text_classification(str(path), text_column="review")


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(HfCompressError, match="dataset 'no-such/dataset' not found"):
        load_text_classification("no-such/dataset")


def test_labels_must_fit_num_labels(tmp_path):
    path = write_csv(tmp_path / "data.csv", [{"text": f"t{i}", "label": i % 3} for i in range(30)])
    data, labels = load_text_classification(str(path))
    assert labels == ["0", "1", "2"]
    check_labels_fit(data, 3, "the student")
    with pytest.raises(HfCompressError, match=r"labels \[2\] don't fit the student with num_labels=2"):
        check_labels_fit(data, 2, "the student")


def test_rotten_tomatoes_split_groups_movies(tmp_path):
    rows = []
    for m in range(40):
        for j in range(5):
            rows.append(
                {
                    "category": ["fresh", "rotten", "plot"][(m + j) % 3],
                    "text": f"movie {m} review {j}",
                    "movie_name": f"Movie {m}",
                    "has_plot_and_reviews": True,
                }
            )
    rows.append({"category": "fresh", "text": "", "movie_name": "Movie 1", "has_plot_and_reviews": True})
    rows.append(
        {
            "category": "rotten",
            "text": "movie 0 review 0",
            "movie_name": "Movie 0",
            "has_plot_and_reviews": True,
        }
    )
    csv = tmp_path / "rt.csv.bz2"
    with bz2.open(csv, "wt") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    build_rotten_tomatoes_splits(csv, tmp_path)
    splits = {s: pd.read_parquet(tmp_path / f"{s}.parquet") for s in ("train", "validation", "test")}
    movies = [set(df["movie_name"]) for df in splits.values()]
    assert not (movies[0] & movies[1]) and not (movies[0] & movies[2]) and not (movies[1] & movies[2])
    everything = pd.concat(splits.values())
    assert set(everything["label"]) == {0, 1}
    assert "" not in set(everything["text"])
    assert "movie 0 review 0" not in set(
        everything["text"]
    )  # duplicated text with conflicting labels dropped
    # Deterministic: building again gives the same split.
    build_rotten_tomatoes_splits(csv, tmp_path)
    assert pd.read_parquet(tmp_path / "test.parquet").equals(splits["test"])


def test_two_tokenizers_and_collator(tmp_path):
    import datasets

    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=7)
    raw = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_list(
                [{"text": "the film was great", "label": 1}, {"text": "bad", "label": 0}]
            )
            for s in ("train", "validation", "test")
        }
    )
    data = tokenize_dataset(raw, student_tok, 16, teacher_tokenizer=teacher_tok)
    assert {"input_ids", "teacher_input_ids", "labels"} <= set(data["train"].column_names)
    row = data["train"][0]
    assert len(row["input_ids"]) == len(row["teacher_input_ids"])
    assert row["input_ids"] != row["teacher_input_ids"]  # same text, other ids
    batch = DistillationDataCollator(student_tok, teacher_tok)([data["train"][0], data["train"][1]])
    assert batch["input_ids"].shape == batch["teacher_input_ids"].shape == (2, 6)
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch["labels"].tolist() == [1, 0]


def test_labels_that_do_not_fit_the_head_are_refused_where_data_meets_the_model(tmp_path):
    """load_classifier(dataset=...) checks every split's labels against the head it built (check_labels_fit
    is called where labels meet a model, not only tested)."""
    import datasets
    from conftest import make_bert, make_tokenizer

    from hfcompress.modeling import load_classifier

    tok = make_tokenizer(tmp_path)
    base = make_bert(num_layers=1, tokenizer=tok)
    base.config.architectures = ["BertModel"]
    base.bert.save_pretrained(tmp_path / "base")
    split = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    data = datasets.DatasetDict(
        train=split, validation=split, test=datasets.Dataset.from_dict({"text": ["c"], "label": [2]})
    )
    with pytest.raises(
        HfCompressError, match=r"test labels \[2\] don't fit model .* num_labels=2; allowed 0..1"
    ):
        load_classifier(str(tmp_path / "base"), ["neg", "pos"], dataset=data)
    model, _ = load_classifier(str(tmp_path / "base"), ["neg", "pos", "other"], dataset=data)
    assert model.config.num_labels == 3
