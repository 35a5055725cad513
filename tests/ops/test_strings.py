"""String ops and TfIdfVectorizer against onnxruntime."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel


def S(*v):
    return np.array(v, dtype=object)


WEEK = S("Monday", "tuesday", "monday", "Wednesday", "MONDAY")


@pytest.mark.parametrize("action", ["NONE", "LOWER", "UPPER"])
@pytest.mark.parametrize("sensitive", [0, 1])
def test_string_normalizer(action, sensitive):
    # locale "C": onnxruntime's default en_US.UTF-8 needs a language pack this machine may lack
    check_against_onnxruntime("StringNormalizer", [WEEK], opset=10, locale="C", case_change_action=action,
                              is_case_sensitive=sensitive, stopwords=["monday"])
    check_against_onnxruntime("StringNormalizer", [WEEK.reshape(1, -1)], opset=10, locale="C",
                              case_change_action=action, is_case_sensitive=sensitive)


def test_string_normalizer_everything_dropped_gives_one_empty_string():
    check_against_onnxruntime("StringNormalizer", [S("a", "A")], opset=10, locale="C", stopwords=["a"])
    check_against_onnxruntime("StringNormalizer", [S("a", "A").reshape(1, 2)], opset=10, locale="C", stopwords=["a"])
    with pytest.raises(NodeExecutionError, match="StringNormalizer"):
        run_kernel("StringNormalizer", [S("a", "b", "c", "d").reshape(2, 2)], opset=10)


def test_string_concat():
    check_against_onnxruntime("StringConcat", [S("abc", "", "的"), S(".com", "x", "中")], opset=20)
    check_against_onnxruntime("StringConcat", [S("cat", "dog").reshape(2, 1), S("s", "z", "")], opset=20)
    check_against_onnxruntime("StringConcat", [np.array("a", dtype=object), np.array("b", dtype=object)], opset=20)


@pytest.mark.parametrize("attrs", [dict(delimiter="."), dict(delimiter="-"), dict(), dict(delimiter=""),
                                   dict(maxsplit=1), dict(delimiter="-", maxsplit=2)])
def test_string_split(attrs):
    x = S("abc.com", "o-n-n--x-", "  hello   world !", "", "a.b-c d").reshape(5, 1)
    check_against_onnxruntime("StringSplit", [x], n_outputs=2, opset=20, **attrs)


def test_string_split_empty_tensor():
    got = run_kernel("StringSplit", [np.empty((0,), dtype=object)], n_outputs=2, opset=20)
    assert got[0].shape == (0, 0) and got[1].shape == (0,) and got[1].dtype == np.int64


def test_regex_full_match():
    x = S("www.google.com", "www.bbc.co.uk", "account@gmail.com", "").reshape(2, 2)
    check_against_onnxruntime("RegexFullMatch", [x], opset=20, pattern=r"www\.[\w.-]+\.\bcom\b")
    check_against_onnxruntime("RegexFullMatch", [x], opset=20, pattern=r"[\w.\-]{0,25}@(yahoo|gmail)\.com")
    check_against_onnxruntime("RegexFullMatch", [np.empty((2, 0), dtype=object)], opset=20, pattern="a*")


TFIDF = dict(min_gram_length=1, max_gram_length=2, ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5, 6],
             pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7])


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("skip", [0, 1, 5])
@pytest.mark.parametrize("grams", [(1, 1), (2, 2), (1, 2)])
def test_tfidf_int(mode, skip, grams):
    x = np.array([[1, 1, 3, 3, 3, 7], [8, 6, 7, 5, 6, 8]], np.int32)
    attrs = dict(TFIDF, mode=mode, max_skip_count=skip, min_gram_length=grams[0], max_gram_length=grams[1])
    if mode != "TF":
        attrs["weights"] = [0.5, 1.0, 2.0, 0.25, 1.5, 3.0, 1.0]
    check_against_onnxruntime("TfIdfVectorizer", [x], opset=9, **attrs)
    check_against_onnxruntime("TfIdfVectorizer", [x[1].astype(np.int64)], opset=9, **attrs)


def test_tfidf_strings():
    x = S("a", "b", "c", "a", "b", "d", "b", "c")
    attrs = dict(min_gram_length=1, max_gram_length=2, max_skip_count=1, mode="TF", ngram_counts=[0, 2],
                 ngram_indexes=[1, 0, 3, 2], pool_strings=["a", "c", "a", "b", "b", "c"])
    check_against_onnxruntime("TfIdfVectorizer", [x], opset=9, **attrs)
