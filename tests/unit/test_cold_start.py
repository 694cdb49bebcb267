"""Items added while serving: the shared append-only log and the vector a new item gets."""

import json
import threading

import numpy as np
import torch

from recsys.online.cold_start import CatalogLog, cold_vector


def test_log_returns_each_item_once_and_waits_for_a_torn_line(tmp_path):
    log = CatalogLog(tmp_path / "new_items.jsonl")
    assert log.read_from(0) == ([], 0)  # no file yet
    log.append({"item_id": "a", "title": "A"})
    items, offset = log.read_from(0)
    assert items == [{"item_id": "a", "title": "A"}]
    with open(log.path, "ab") as f:
        f.write(b'{"item_id": "b", "ti')  # a writer caught mid-line
    assert log.read_from(offset) == ([], offset)
    with open(log.path, "ab") as f:
        f.write(b'tle": "B"}\n')
    assert log.read_from(offset)[0] == [{"item_id": "b", "title": "B"}]


def test_concurrent_appends_never_interleave(tmp_path):
    log = CatalogLog(tmp_path / "new_items.jsonl")
    threads = [threading.Thread(target=lambda t=t: [log.append({"item_id": f"{t}-{i}", "title": "x" * 500}) for i in range(25)]) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items, _ = log.read_from(0)
    assert sorted(i["item_id"] for i in items) == sorted(f"{t}-{i}" for t in range(4) for i in range(25))
    assert all(json.loads(line) for line in log.path.read_text().splitlines())


def test_cold_vector_is_the_mean_of_known_attribute_vectors():
    from recsys.models import SeqRecConfig, SeqRecModel

    model = SeqRecModel(SeqRecConfig(num_items=10, num_attributes=6, max_attributes_per_item=3, hidden_size=8, num_layers=1, num_heads=2))
    table = torch.zeros(12, 3, dtype=torch.long)
    table[4] = torch.tensor([2, 5, 0])
    model.set_item_attributes(table)
    with torch.no_grad():
        trained = model.items(torch.tensor([4]))[0] - model.items.id_embedding.weight[4]
    # A trained item with the same attributes, minus its id embedding, is what a new item gets.
    np.testing.assert_allclose(cold_vector(model.items, [2, 5]), trained.numpy(), atol=1e-6)
    assert not cold_vector(model.items, []).any()
