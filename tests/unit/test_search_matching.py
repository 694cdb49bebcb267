"""Search on judged queries (`recsys search eval`, hand-computed nDCG), the lexical analysis real
queries need (units, stemming, stop words, typos), the fusions, and the catalog's pseudo-queries."""

import json
import math

import numpy as np
import pytest

from recsys.cli import main
from recsys.search.engine import SearchIndex, SearchWeights
from recsys.search.judged import read_catalog, read_judged
from recsys.search.lexical import Analyzer, BM25Index
from recsys.search.pseudo_queries import shopper_queries, training_queries, typo

CATALOG = ("item_id,title,category\na,red ceramic mug,kitchen\nb,blue ceramic mug,kitchen\n"
           "c,red wool winter scarf,clothing\nd,garden hose 50 ft,garden\n")


@pytest.fixture
def judged_files(tmp_path):
    (tmp_path / "items.csv").write_text(CATALOG)
    (tmp_path / "queries.tsv").write_text("q1\tred mug\nq2\tgarden hose\nq3\tnothing judged relevant\n")
    # q1: b is the better answer (grade 2), a is relevant (1); q2: d; then four lines to skip and one
    # judgment of grade 0 (not relevant).
    (tmp_path / "qrels.txt").write_text(
        "q1 0 a 1\nq1 0 b 2\nq2 0 d 1\nq2 0 zz 1\nq1 0 c high\nq3 0 a 0\nq9 0 a 1\nonly two\nq2 0 b 0.5\n")
    return tmp_path


def test_search_eval_matches_hand_computed_ndcg_and_reports_bad_lines(judged_files, capsys):
    out = judged_files / "out"
    code = main(["search", "eval", "--config", "configs/demo.yaml", "--catalog", str(judged_files / "items.csv"),
                 "--qrels", str(judged_files / "qrels.txt"), "--queries", str(judged_files / "queries.tsv"),
                 "--modes", "lexical", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    # BM25 for "red mug": a matches both words; b ("mug") beats c ("red", same document frequency,
    # a longer text): a, b, c. Gains 1, 2, 0:
    # DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3).
    q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    summary = json.loads((out / "search_eval.json").read_text())
    lexical = summary["modes"]["lexical"]
    assert lexical["ndcg@10"] == pytest.approx((q1 + 1.0) / 2, abs=1e-9)  # q2: d alone matches
    assert lexical["mrr"] == 1.0 and lexical["recall@100"] == 1.0
    assert summary["judged"]["skipped"] == {"unknown_item": 1, "non_numeric_grade": 1, "unknown_query": 1, "malformed_line": 1,
                                            "non_integer_gain": 1}
    assert summary["judged"]["queries"] == 2 and summary["judged"]["queries_without_relevant_item"] == 1
    assert "qrels.txt line 4: item 'zz' is not in the catalog" in printed and "line 5: grade 'high'" in printed
    assert "line 9: gain 0.5" in printed  # ranx would silently truncate it to 0
    assert summary["protocol"]["unjudged"] == "non-relevant" and "ties" in summary["protocol"]
    rows = (out / "per_query.csv").read_text().splitlines()
    assert rows[0].startswith("mode,query_id,query,ndcg@10") and len(rows) == 3
    assert rows[1].split(",")[-1] == "a b c"  # the answer shown for error analysis


def test_grade_offset_makes_low_grades_irrelevant(judged_files):
    catalog = read_catalog(judged_files / "items.csv")
    judged = read_judged(judged_files / "qrels.txt", catalog, judged_files / "queries.tsv", grade_offset=1)
    assert judged.qrels["q1"] == {"b": 1} and "q2" not in judged.queries  # d's grade 1 is now "irrelevant"


def test_search_eval_refuses_what_it_cannot_evaluate(tmp_path, capsys):
    (tmp_path / "items.csv").write_text("item_id,price\na,3\n")
    with pytest.raises(ValueError, match="no text column to search; looked for title, name"):
        read_catalog(tmp_path / "items.csv")
    (tmp_path / "items.csv").write_text(CATALOG)
    (tmp_path / "qrels.txt").write_text("q1 0 zz 1\n")
    (tmp_path / "queries.tsv").write_text("q1\tred mug\n")
    code = main(["search", "eval", "--config", "configs/demo.yaml", "--catalog", str(tmp_path / "items.csv"),
                 "--qrels", str(tmp_path / "qrels.txt"), "--queries", str(tmp_path / "queries.tsv"), "--modes", "lexical"])
    assert code == 1 and "no query to evaluate" in capsys.readouterr().err
    assert main(["search", "eval", "--config", "configs/demo.yaml", "--catalog", str(tmp_path / "items.csv")]) == 2
    assert "needs --qrels" in capsys.readouterr().err


def test_ties_are_broken_by_a_seeded_shuffle_not_by_the_file_order(tmp_path):
    from recsys.search.judged import top_items

    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{k},red mug\n" for k in range(40)))
    catalog = read_catalog(tmp_path / "items.csv")
    (tmp_path / "q.csv").write_text("query_id,item_id,grade,query\nq1,i0,1,red mug\nq2,i0,1,red mug\n")
    judged = read_judged(tmp_path / "q.csv", catalog)
    index = SearchIndex(catalog.texts, np.eye(40, dtype=np.float32), None, SearchWeights())
    run = top_items(index, catalog, judged, "lexical", np.zeros((2, 1), np.float32))
    first, second = list(run["q1"]), list(run["q2"])
    assert sorted(first) == sorted(catalog.item_ids) and first != catalog.item_ids and first != second
    assert list(top_items(index, catalog, judged, "lexical", np.zeros((2, 1), np.float32))["q1"]) == first  # seeded


def test_a_parquet_catalog_with_list_attributes(tmp_path):
    import pandas as pd

    pd.DataFrame({"item_id": ["a", "b"], "title": ["Red Mug", "Blue Plate"], "attributes": [["colour:red"], []]}).to_parquet(
        tmp_path / "items.parquet")
    catalog = read_catalog(tmp_path / "items.parquet")
    assert catalog.texts == ["Red Mug red", "Blue Plate"] and catalog.fields == ["title", "attributes"]


def test_qrels_as_a_table_may_carry_the_query_text(tmp_path):
    (tmp_path / "items.csv").write_text(CATALOG)
    (tmp_path / "qrels.csv").write_text("query_id,item_id,grade,query\nq1,a,3,red mug\nq1,b,1,red mug\n")
    judged = read_judged(tmp_path / "qrels.csv", read_catalog(tmp_path / "items.csv"))
    assert judged.queries == {"q1": "red mug"} and judged.qrels["q1"] == {"a": 3, "b": 1}


def test_units_model_codes_stems_and_stopwords():
    rich = Analyzer(stem=True, stopwords=True, units=True)
    assert rich.terms("1/2 in. PVC Elbows") == ["1/2in", "pvc", "elbow"]
    assert rich.terms("12-ounce jar") == rich.terms("12 oz jar") == rich.terms("12oz jars") == ["12oz", "jar"]
    assert rich.terms('6" pipe, XR-500 filter') == ["6in", "pipe", "xr500", "filter"]
    assert rich.terms("the") == ["the"]  # a query of stop words alone keeps them
    assert Analyzer().terms("12 oz XR-500") == ["12", "oz", "xr", "500"]  # off: the plain words


def test_typo_tolerance_only_touches_terms_the_catalog_lacks():
    index = BM25Index(["rustoleum spray paint", "paint brush", "garden hose"], analyzer=Analyzer(typos=True))
    assert index.query_terms("rustolem paint") == ["rustoleum", "paint"]
    assert index.query_terms("hose brush") == ["hose", "brush"]  # known terms are never corrected
    assert index.query_terms("xyzzyq") == ["xyzzyq"]  # nothing within two edits
    assert index.query_terms("brsuh hsoe") == ["brush", "hose"]  # a swap of neighbours is one edit
    assert index.scores("rustolem")[0] > 0 and not BM25Index(["rustoleum spray paint"]).scores("rustolem").any()


def test_bound_normalisation_does_not_depend_on_what_the_query_found():
    texts = ["red mug", "red mug red", "blue plate"]
    best = SearchIndex(texts, np.eye(3, dtype=np.float32), None, SearchWeights(lexical_norm="best"))
    bound = SearchIndex(texts, np.eye(3, dtype=np.float32), None, SearchWeights(lexical_norm="bound"))
    hide_top = np.array([True, False, True])
    # "best": item 1's score jumps to 1.0 once the better item 2 is filtered out; "bound" keeps it.
    assert best.lexical_scores("red mug")[0] < 1.0 == best.lexical_scores("red mug", hide_top)[0]
    a, b = bound.lexical_scores("red mug")[0], bound.lexical_scores("red mug", hide_top)[0]
    assert a == b and 0 < a < 1
    # The bound is what a text repeating the terms without end approaches: a tight bound, not a loose one.
    many = BM25Index(["red mug " * 500, "blue plate", "green cup"])
    assert 0.95 * many.bound("red mug") < many.scores("red mug")[0] < many.bound("red mug")


def test_the_response_names_the_matched_query_words_units_included():
    index = BM25Index(["red mug 12 oz", "garden hose"], analyzer=Analyzer(stem=True, units=True, typos=True))
    assert index.matched_terms("12 oz mugs", "red mug 12 oz") == ["12 oz", "mugs"]
    assert index.matched_terms("Red, red rustic", "red mug 12 oz") == ["red"]
    assert BM25Index(["red mug"]).matched_terms("12 oz mug", "red mug") == ["mug"]


def test_reciprocal_rank_fusion_by_hand():
    index = SearchIndex(["a", "b", "c"], np.eye(3, dtype=np.float32), None, SearchWeights(dense=1.0, lexical=1.0, fusion="rrf", rrf_k=60))
    semantic = np.array([0.9, 0.5, 0.1])
    lexical = np.array([0.0, 0.8, 0.8])  # b and c tie for first: both rank 1.5; a has no lexical term
    scores, _ = index.mix("hybrid", semantic, lexical, None)
    np.testing.assert_allclose(scores, [1 / 61, 1 / 62 + 1 / 61.5, 1 / 63 + 1 / 61.5])


def test_pseudo_queries_are_seeded_and_shopper_qrels_cover_same_titled_items():
    rows = [{"item_index": i + 1, "item_id": f"i{i}", "title": t, "category": "home", "brand": None, "attributes": ["colour:red"]}
            for i, t in enumerate(["Red Ceramic Mug 12 oz", "Garden Hose 50 ft", "Red Ceramic Mug 12 oz", "Wool Scarf"])]
    a, b = training_queries(rows, 3, seed=1), training_queries(rows, 3, seed=1)
    assert a == b and len(a) == 12 and {p["item"] for p in a} == {1, 2, 3, 4}
    assert training_queries(rows, 3, seed=2) != a
    queries, qrels = shopper_queries(rows, 4, seed=0)
    assert len(queries) == 4
    for q, judged in qrels.items():
        if "i0" in judged or "i2" in judged:
            assert judged == {"i0": 1, "i2": 1}, queries[q]
    assert typo("ceramic", np.random.default_rng(0)) != "ceramic" and typo("mug", np.random.default_rng(0)) == "mug"


def test_safeguard_keeps_the_pretrained_encoder_when_adaptation_scored_lower(tmp_path):
    from recsys.artifacts import ArtifactStore, ExportMeta
    from recsys.config import load_config
    from recsys.data.dataset import PreparedDataset
    from recsys.search.encoder import pretrained_path
    from recsys.search.examples import encoder_for

    cfg = load_config("configs/demo.yaml", [f"artifacts.root={tmp_path}", "search.adapt.enabled=true"])
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"name": "shop", "version": "v1"}))
    dataset = PreparedDataset(data)
    with pytest.raises(FileNotFoundError, match="search.adapt is on"):
        encoder_for(cfg, dataset)
    model = tmp_path / "export"
    model.mkdir()
    store = ArtifactStore.of(cfg)
    for version, ship in (("v-refused", False), ("v-shipped", True)):
        safeguard = {"pretrained": 0.30, "adapted": 0.25 if not ship else 0.35, "ship": ship}
        store.publish_model("search", model, version, ExportMeta(stage="search", run="r", dataset_path=str(data),
                                                                 extra={"safeguard": safeguard}))
        path, source = encoder_for(cfg, dataset)
        assert (path, source) == ((pretrained_path(), "pretrained") if not ship else (store.folder("search") / version, "adapted"))


def test_the_safeguard_slice_never_reaches_training():
    from recsys.config import load_config
    from recsys.search.adapt import held_out_queries, split_pairs

    cfg = load_config("configs/demo.yaml", ["search.adapt.holdout=0.2", "search.adapt.queries_per_item=2"])
    # 50 items, 25 distinct titles (each twice): twins must land on the same side.
    rows = [{"item_index": i, "item_id": str(i), "title": f"Brand{i % 25} soft cream", "category": "skin", "brand": None,
             "attributes": []} for i in range(1, 51)]
    train, held = split_pairs(cfg, rows)
    assert len(held) == 5 * 2 and len(train) == 40 * 2
    assert not {p["item"] for p in train} & held
    assert {r["title"] for r in rows if r["item_index"] in held}.isdisjoint(p["text"].split(" skin")[0] for p in train)
    queries, qrels = held_out_queries(cfg, rows, held)
    assert queries and all(len(rel) == 2 and set(rel) <= held for rel in qrels.values())  # both twins relevant
    assert split_pairs(cfg, rows) == (train, held)  # seeded: the same slice on a rerun (resume)
    with pytest.raises(ValueError, match="no item with a title"):
        split_pairs(cfg, [{**r, "title": None} for r in rows])
