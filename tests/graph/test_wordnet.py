"""WordNet reader set-up and the WordNet tree builder."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import nltk
import pytest

from mlattack.graph import LabelGraph
from mlattack.graph_sources import wordnet as wordnet_source
from mlattack.graph_sources.wordnet import (
    DEBIAN_WORDNET_DIR,
    DEFAULT_EXCLUDED_SYNSETS,
    WORDNET_30_LEXNAMES,
    WordNetUnavailableError,
    build_wordnet_graph,
    get_wordnet,
    load_wordnet,
    prepare_nltk_data,
)

needs_debian_wordnet = pytest.mark.skipif(
    not (DEBIAN_WORDNET_DIR / "data.noun").is_file(),
    reason=f"Debian wordnet-base not installed ({DEBIAN_WORDNET_DIR})",
)


def _edges_by_name(graph: LabelGraph) -> set[tuple[str, str]]:
    return {(graph.names[p], graph.names[c]) for p, c in graph.edges.tolist()}


def _parent_of(graph: LabelGraph, name: str) -> str | None:
    parents = graph.parents(name)
    assert len(parents) <= 1, f"{name} has several parents in a WordNet tree"
    return graph.names[int(parents[0])] if len(parents) else None


# ------------------------------------------------------------------------------ data preparation
def _lex_file_numbers(data_file: Path) -> set[int]:
    numbers = set()
    with data_file.open(encoding="latin-1") as handle:
        for line in handle:
            if not line.startswith(" "):  # the license header lines start with spaces
                numbers.add(int(line.split(" ", 2)[1]))
    return numbers


@needs_debian_wordnet
@pytest.mark.parametrize("pos", ["noun", "verb", "adj", "adv"])
def test_lexnames_match_the_lex_file_numbers_in_the_data_files(pos: str) -> None:
    assert len(WORDNET_30_LEXNAMES) == 45
    assert len(set(WORDNET_30_LEXNAMES)) == 45
    used = _lex_file_numbers(DEBIAN_WORDNET_DIR / f"data.{pos}")
    assert used, f"no synsets read from data.{pos}"
    assert {WORDNET_30_LEXNAMES[number].split(".")[0] for number in used} == {pos}


def test_lexnames_of_known_synsets(wordnet: Any) -> None:
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"
    assert wordnet.synset("car.n.01").lexname() == "noun.artifact"
    assert wordnet.synset("run.v.01").lexname() == "verb.motion"
    assert wordnet.synset("entity.n.01").lexname() == "noun.Tops"


@needs_debian_wordnet
def test_prepared_data_dir_is_private_copies_nltk_accepts(tmp_path: Path) -> None:
    data_root = prepare_nltk_data(DEBIAN_WORDNET_DIR, tmp_path / "cache")
    corpus = data_root / "corpora" / "wordnet"
    assert data_root == tmp_path / "cache" / "nltk_data"
    for entry in corpus.iterdir():
        info = entry.lstat()
        assert stat.S_ISREG(info.st_mode), f"{entry} is not a regular file"
        assert stat.S_IMODE(info.st_mode) == 0o644, f"{entry} mode {oct(info.st_mode)}"
    for directory in (data_root, data_root / "corpora", corpus):
        assert not directory.stat().st_mode & 0o022, f"{directory} writable by others"
    lines = (corpus / "lexnames").read_text().splitlines()
    assert lines[0].split("\t") == ["00", "adj.all", "3"]
    assert lines[5].split("\t") == ["05", "noun.animal", "1"]
    assert lines[44].split("\t") == ["44", "adj.ppl", "3"]
    assert (corpus / "data.noun").read_bytes() == (DEBIAN_WORDNET_DIR / "data.noun").read_bytes()


@needs_debian_wordnet
def test_prepared_data_dir_is_built_once_and_safely_in_parallel(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            results.append(prepare_nltk_data(DEBIAN_WORDNET_DIR, cache))
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    corpora = results[0] / "corpora"
    assert [p.name for p in corpora.iterdir()] == ["wordnet"], "staging directories left over"
    stamp = (corpora / "wordnet" / "lexnames").stat().st_mtime_ns
    prepare_nltk_data(DEBIAN_WORDNET_DIR, cache)
    assert (corpora / "wordnet" / "lexnames").stat().st_mtime_ns == stamp


def test_missing_database_names_both_ways_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "wordnet").mkdir()
    with pytest.raises(WordNetUnavailableError) as info:
        load_wordnet(tmp_path / "wordnet", tmp_path / "cache")
    message = str(info.value)
    assert "data.noun" in message and str(tmp_path / "wordnet") in message
    assert "apt-get install wordnet-base" in message
    assert "nltk.download('wordnet')" in message
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports it as a clean error


@needs_debian_wordnet
def test_an_nltk_install_on_the_data_path_is_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand in for `nltk.download("wordnet")`: a corpora/wordnet folder on nltk.data.path.
    installed = prepare_nltk_data(DEBIAN_WORDNET_DIR, tmp_path / "user")
    monkeypatch.setattr(nltk.data, "path", [str(installed)])
    opened: list[str] = []
    monkeypatch.setattr(wordnet_source, "_open_reader", lambda root: opened.append(str(root)))
    load_wordnet(cache_dir=tmp_path / "never-used")
    assert opened == [str(installed / "corpora" / "wordnet")]
    assert not (tmp_path / "never-used").exists()


@needs_debian_wordnet
def test_unwritable_cache_is_a_clean_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file where the cache should be")
    with pytest.raises(WordNetUnavailableError, match="MLATTACK_CACHE"):
        load_wordnet(DEBIAN_WORDNET_DIR, not_a_directory)


@pytest.mark.slow  # opens a second reader (seconds) to check NLTK accepts a fresh copy
@needs_debian_wordnet
def test_load_wordnet_from_a_given_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # undo the data root it adds
    reader = load_wordnet(DEBIAN_WORDNET_DIR, tmp_path / "cache")
    assert reader.get_version() == "3.0"
    assert "canine.n.02" in {s.name() for s in reader.synset("dog.n.01").hypernyms()}


def test_get_wordnet_is_one_reader_per_process(wordnet: Any) -> None:
    assert get_wordnet() is wordnet
    assert wordnet.get_version() == "3.0"


# ------------------------------------------------------------------------------ tree building
def test_small_tree_collapses_single_child_chains(wordnet: Any) -> None:
    graph = build_wordnet_graph(["dog", "cat", "car", "bicycle"])
    assert graph.names[:4] == ("dog", "cat", "car", "bicycle")
    # carnivore .. living_thing all cover {dog, cat}: one node stays, the most used head word.
    assert _edges_by_name(graph) == {
        ("animal", "dog"),
        ("animal", "cat"),
        ("vehicle", "car"),
        ("vehicle", "bicycle"),
    }
    assert graph.metadata["synsets"] == {
        "dog": "dog.n.01",
        "cat": "cat.n.01",
        "car": "car.n.01",
        "bicycle": "bicycle.n.01",
        "animal": "animal.n.01",
        "vehicle": "vehicle.n.01",
    }
    assert graph.metadata["labels"] == ["dog", "cat", "car", "bicycle"]
    assert graph.metadata["source"] == "wordnet"


def test_without_collapsing_every_shared_ancestor_below_the_cut_stays(wordnet: Any) -> None:
    graph = build_wordnet_graph(["dog", "cat"], collapse_chains=False)
    chain = ["dog"]
    while (parent := _parent_of(graph, chain[-1])) is not None:
        chain.append(parent)
    assert chain == [
        "dog", "carnivore", "placental", "mammal", "vertebrate", "chordate", "animal",
        "organism", "living_thing",
    ]  # fmt: skip
    # whole.n.02 (default exclude) and object/physical_entity/entity (min_depth 3) are cut.
    assert "whole" not in graph.names and "entity" not in graph.names
    assert len(graph) == len(chain) + 1


def test_min_depth_and_exclude_control_the_generic_top(wordnet: Any) -> None:
    full = build_wordnet_graph(["dog", "cat"], collapse_chains=False, min_depth=0, exclude=())
    assert {"entity", "physical_entity", "object", "whole"} <= set(full.names)
    trimmed = build_wordnet_graph(
        ["dog", "cat"],
        collapse_chains=False,
        exclude=[*DEFAULT_EXCLUDED_SYNSETS, "living_thing.n.01", "organism.n.01"],
    )
    assert not {"living_thing", "organism"} & set(trimmed.names)
    assert trimmed.roots.size == 1 and trimmed.names[int(trimmed.roots[0])] == "animal"


def test_parent_is_the_candidate_with_highest_wu_palmer_similarity(wordnet: Any) -> None:
    # wheeled_vehicle.n.01 is both a container and a vehicle; both are shared by >= 2 labels.
    graph = build_wordnet_graph(["car", "bicycle", "bottle", "boat"])
    wheeled = wordnet.synset("wheeled_vehicle.n.01")
    similarities = {
        name: wheeled.wup_similarity(wordnet.synset(f"{name}.n.01"))
        for name in ("container", "vehicle")
    }
    best = max(similarities, key=similarities.__getitem__)
    assert similarities[best] > min(similarities.values())
    assert _parent_of(graph, "wheeled_vehicle") == best == "vehicle"
    # container then covers only the bottle in the tree and is dropped (min_shared = 2).
    assert "container" not in graph.names
    assert _parent_of(graph, "bottle") == "artifact"


def test_min_shared_keeps_only_ancestors_of_enough_labels(wordnet: Any) -> None:
    labels = ["dog", "cat", "horse", "car"]
    default = build_wordnet_graph(labels)
    assert _parent_of(default, "dog") == "carnivore"
    strict = build_wordnet_graph(labels, min_shared=3)
    assert "carnivore" not in strict.names
    assert _parent_of(strict, "dog") == _parent_of(strict, "horse") == "animal"
    assert _parent_of(strict, "car") is None


def test_a_label_can_be_the_ancestor_of_other_labels(wordnet: Any) -> None:
    graph = build_wordnet_graph(["vehicle", "car", "bicycle"])
    assert _edges_by_name(graph) == {
        ("vehicle", "wheeled_vehicle"),
        ("wheeled_vehicle", "car"),
        ("wheeled_vehicle", "bicycle"),
    }


def test_synset_overrides_and_name_normalisation(wordnet: Any) -> None:
    graph = build_wordnet_graph(
        ["tv_monitor", "Dining Table", "cars", "motorbike"],
        synsets={"tv_monitor": "television_receiver.n.01", "motorbike": "motorcycle.n.01"},
        min_shared=1,
    )
    synsets = graph.metadata["synsets"]
    assert synsets["tv_monitor"] == "television_receiver.n.01"
    assert synsets["Dining Table"] == "dining_table.n.01"
    assert synsets["cars"] == "car.n.01"  # plural through WordNet's morphology
    assert synsets["motorbike"] == "motorcycle.n.01"


def test_labels_written_as_synset_names(wordnet: Any) -> None:
    graph = build_wordnet_graph(["dog.n.01", "cat.n.01", "self-propelled_vehicle.n.01"])
    assert graph.metadata["synsets"]["self-propelled_vehicle.n.01"] == "self-propelled_vehicle.n.01"
    assert [graph.names[i] for i in graph.parents("dog.n.01")] == ["animal"]


def test_every_node_hangs_below_a_wordnet_hypernym_of_it(wordnet: Any) -> None:
    labels = ["dog", "cat", "cow", "sheep", "car", "bus", "train", "chair", "sofa", "person"]
    graph = build_wordnet_graph(labels)
    synsets = graph.metadata["synsets"]
    for parent, child in _edges_by_name(graph):
        closure = set(wordnet.synset(synsets[child]).closure(lambda s: s.hypernyms()))
        assert wordnet.synset(synsets[parent]) in closure, (parent, child)
    for index in range(len(graph)):
        assert len(graph.parents(index)) <= 1
        if graph.names[index] not in labels:
            below = [graph.names[i] for i in graph.descendants(index).tolist()]
            assert len(set(below) & set(labels)) >= 2, graph.names[index]
            assert len(graph.children(index)) >= 2, graph.names[index]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"labels": ["dog", "xqzzyplonk"]}, ValueError, "'xqzzyplonk'"),
        ({"labels": ["dog", "diningtable"]}, ValueError, "'diningtable'"),
        ({"labels": ["dog", "dog"]}, ValueError, "'dog' appears more than once"),
        ({"labels": ["car", "auto"]}, ValueError, "'car' and 'auto' both map to synset"),
        ({"labels": []}, ValueError, "labels is empty"),
        ({"labels": ["dog", ""]}, ValueError, "labels[1]"),
        ({"labels": ["dog", 3]}, TypeError, "labels[1]"),
        ({"labels": "dog"}, TypeError, "sequence of label names"),
        ({"labels": ["dog"], "synsets": {"cat": "cat.n.01"}}, ValueError, "['cat']"),
        ({"labels": ["dog"], "synsets": {"dog": "dog.n.99"}}, ValueError, "'dog.n.99'"),
        ({"labels": ["dog"], "synsets": {"dog": "not a synset"}}, ValueError, "'dog'"),
        ({"labels": ["dog"], "synsets": {"dog": "run.v.01"}}, ValueError, "not a noun synset"),
        ({"labels": ["dog"], "synsets": {"dog": 1}}, TypeError, "synsets['dog']"),
        ({"labels": ["dog", "cat.n.77"]}, ValueError, "label = 'cat.n.77'"),
        ({"labels": ["dog"], "min_shared": 0}, ValueError, "min_shared"),
        ({"labels": ["dog"], "min_depth": -1}, ValueError, "min_depth"),
        ({"labels": ["dog"], "exclude": ["whole.n.99"]}, ValueError, "exclude = 'whole.n.99'"),
        ({"labels": ["dog"], "exclude": None}, TypeError, "exclude"),
    ],
)
def test_bad_input_names_the_offender(
    wordnet: Any, kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as info:
        build_wordnet_graph(**kwargs)
    assert fragment in str(info.value)


def test_reader_subclass_skips_only_the_identity_sense_map(wordnet: Any) -> None:
    # The 3.0 -> 3.0 map needs index.sense, which Debian lacks; it is the identity anyway.
    assert wordnet.map30 is None


def test_strict_option_types_are_checked_before_reading_wordnet() -> None:
    for bad in ("no", "false", 0, None):
        with pytest.raises(TypeError, match="collapse_chains must be True or False"):
            build_wordnet_graph(["dog", "cat"], collapse_chains=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="synsets must be a mapping"):
        build_wordnet_graph(["dog"], synsets=[("dog", "dog.n.01")])  # type: ignore[arg-type]
