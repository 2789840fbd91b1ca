"""Label hierarchies built from WordNet 3.0, read offline through NLTK.

:func:`get_wordnet` gives one NLTK ``WordNetCorpusReader`` per process. It uses a normal NLTK
install (``nltk.download("wordnet")``) when there is one; otherwise it prepares a private NLTK data
directory from Debian's ``wordnet-base`` files (``/usr/share/wordnet``), adding what NLTK needs and
Debian does not ship (the ``lexnames`` file).

:func:`build_wordnet_graph` turns a list of label names into a tree the way the GMLA paper does:
each label gets a synset, the hypernym paths of all labels are walked, abstract synsets shared by
at least ``min_shared`` labels are kept, and every node gets one parent, the kept ancestor with the
highest Wu-Palmer similarity.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlattack._validation import check_bool, check_int
from mlattack.graph import LabelGraph

__all__ = [
    "DEBIAN_WORDNET_DIR",
    "DEFAULT_EXCLUDED_SYNSETS",
    "WORDNET_30_LEXNAMES",
    "WordNetUnavailableError",
    "build_wordnet_graph",
    "get_wordnet",
    "load_wordnet",
    "prepare_nltk_data",
]

#: Where Debian's ``wordnet-base`` package puts the WordNet 3.0 database.
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")

#: The 45 lexicographer file names of WordNet 3.0; a synset's ``lex_filenum`` indexes this tuple.
WORDNET_30_LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

# Third column of WordNet's ``lexnames`` file: the syntactic category of each lexicographer file.
_LEXNAME_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# Database files NLTK's reader opens (``index.sense`` is only needed for sense keys, which
# Debian does not ship and this package does not use).
_DATABASE_FILES = (
    "cntlist.rev",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)

#: Abstract synsets dropped by default besides those closer than ``min_depth`` to the root:
#: ``whole.n.02`` (every living thing and artifact) is too generic to be a useful label.
DEFAULT_EXCLUDED_SYNSETS: tuple[str, ...] = ("whole.n.02",)

_INSTALL_HINT = (
    "install Debian's WordNet 3.0 database (`apt-get install wordnet-base`, which fills "
    f"{DEBIAN_WORDNET_DIR}) or NLTK's copy (`python -c \"import nltk; nltk.download('wordnet')\"`)"
)


class WordNetUnavailableError(LookupError, FileNotFoundError):
    """Neither an NLTK WordNet install nor Debian's ``wordnet-base`` files could be read."""


def _default_cache_dir() -> Path:
    explicit = os.environ.get("MLATTACK_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mlattack"


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and strip group/world write bits NLTK refuses to trust."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    mode = path.stat().st_mode
    if mode & 0o022:
        path.chmod(mode & ~0o022 & 0o7777)


def _corpus_is_complete(corpus_dir: Path) -> bool:
    return all((corpus_dir / name).is_file() for name in (*_DATABASE_FILES, "lexnames"))


def _lexnames_text() -> str:
    return "".join(
        f"{index:02d}\t{name}\t{_LEXNAME_CATEGORY[name.split('.')[0]]}\n"
        for index, name in enumerate(WORDNET_30_LEXNAMES)
    )


def prepare_nltk_data(
    wordnet_dir: str | os.PathLike[str] = DEBIAN_WORDNET_DIR,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Build (once) a private NLTK data root holding ``corpora/wordnet`` copied from ``wordnet_dir``.

    NLTK refuses symlinks out of its data root and group/world-writable files, so the database
    files are copied (mode 0644) and the ``lexnames`` file Debian lacks is written beside them.
    The corpus is assembled in a staging directory and renamed into place, so concurrent
    processes never see a half-written corpus. Returns the data root (``<cache>/nltk_data``),
    the directory to append to ``nltk.data.path``.

    Raises:
        WordNetUnavailableError: ``wordnet_dir`` lacks one of the WordNet 3.0 database files.
    """
    source = Path(wordnet_dir)
    missing = [name for name in _DATABASE_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetUnavailableError(
            f"WordNet database files {missing} not found in {source}; {_INSTALL_HINT}"
        )
    data_root = Path(cache_dir if cache_dir is not None else _default_cache_dir()) / "nltk_data"
    corpora = data_root / "corpora"
    corpus_dir = corpora / "wordnet"
    if _corpus_is_complete(corpus_dir):
        return data_root
    _ensure_private_dir(data_root)
    _ensure_private_dir(corpora)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-staging-", dir=corpora))
    try:
        for name in _DATABASE_FILES:
            shutil.copyfile(source / name, staging / name)  # follows links: a real copy
            (staging / name).chmod(0o644)
        (staging / "lexnames").write_text(_lexnames_text(), encoding="ascii")
        (staging / "lexnames").chmod(0o644)
        staging.chmod(0o755)
        try:
            staging.rename(corpus_dir)
        except OSError:
            # Another process won the race; its corpus is as good as ours.
            if not _corpus_is_complete(corpus_dir):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data_root


def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        """NLTK's reader without the WordNet-3.0 sense map when the database *is* 3.0.

        NLTK maps every database onto NLTK's own WordNet 3.0 through ``index.sense`` files;
        for a 3.0 database that map is the identity, and Debian does not ship ``index.sense``.
        """

        def map_wn(self, version: str = "wordnet") -> Any:
            if version == "wordnet" and self.get_version() == "3.0":
                return None
            return super().map_wn(version)

    return WordNet30Reader


def _open_reader(root: Any) -> Any:
    with warnings.catch_warnings():
        # Multilingual (OMW) data is not used here.
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return _reader_class()(root, None)


def load_wordnet(
    wordnet_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Open a fresh WordNet reader (uncached; most callers want :func:`get_wordnet`).

    With ``wordnet_dir`` None an NLTK install of ``corpora/wordnet`` found on ``nltk.data.path``
    is used first, then Debian's files in :data:`DEBIAN_WORDNET_DIR`. A given ``wordnet_dir``
    (a folder of WordNet 3.0 database files) is always copied into the private data root under
    ``cache_dir`` (default ``$MLATTACK_CACHE``, else ``~/.cache/mlattack``).

    Raises:
        WordNetUnavailableError: no usable WordNet was found; the message says how to install one.
    """
    try:
        import nltk
    except ImportError as exc:
        raise WordNetUnavailableError(
            f"NLTK is needed to read WordNet (`pip install nltk`): {exc}"
        ) from exc

    if wordnet_dir is None:
        for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
            try:
                return _open_reader(nltk.data.find(resource))
            except (LookupError, OSError):
                continue
    try:
        data_root = prepare_nltk_data(
            DEBIAN_WORDNET_DIR if wordnet_dir is None else wordnet_dir, cache_dir
        )
    except WordNetUnavailableError:
        raise
    except OSError as exc:
        raise WordNetUnavailableError(
            f"could not prepare a private NLTK data directory ({exc}); point MLATTACK_CACHE at "
            f"a writable directory, or {_INSTALL_HINT}"
        ) from exc
    # NLTK only opens corpora below a directory on nltk.data.path ("Unauthorized path" otherwise).
    if str(data_root) not in nltk.data.path:
        nltk.data.path.append(str(data_root))
    try:
        root = nltk.data.find("corpora/wordnet", paths=[str(data_root)])
        return _open_reader(root)
    except (LookupError, OSError) as exc:
        raise WordNetUnavailableError(
            f"could not read the WordNet copy in {data_root / 'corpora' / 'wordnet'} ({exc}); "
            f"delete it to rebuild it, or {_INSTALL_HINT}"
        ) from exc


_READER: Any = None
_READER_LOCK = threading.Lock()


def get_wordnet() -> Any:
    """The process-wide NLTK ``WordNetCorpusReader`` for WordNet 3.0 (opened on first call).

    Raises:
        WordNetUnavailableError: no usable WordNet was found; the message says how to install one.
    """
    global _READER
    with _READER_LOCK:
        if _READER is None:
            _READER = load_wordnet()
        return _READER


# --------------------------------------------------------------------------------------------
# Building a label tree
# --------------------------------------------------------------------------------------------


# A label written as a synset name ("dog.n.01") names its synset directly.
_SYNSET_NAME = re.compile(r"[^.\s]+(?:\.[^.\s]+)*\.[nvasr]\.\d{2,}")


def _normalise_label(label: str) -> str:
    return "_".join(label.strip().lower().replace("-", " ").split())


def _named_synset(wordnet: Any, name: object, where: str) -> Any:
    """The noun synset called ``name`` (``'dog.n.01'``); errors say ``where`` it was named."""
    from nltk.corpus.reader.wordnet import WordNetError

    if not isinstance(name, str):
        raise TypeError(
            f"{where} must be a synset name such as 'dog.n.01', got {type(name).__name__}"
        )
    try:
        synset = wordnet.synset(name)
    except (WordNetError, ValueError, LookupError) as exc:
        raise ValueError(
            f"{where} = {name!r} is not a WordNet 3.0 synset (expected a name such as 'dog.n.01')"
        ) from exc
    if synset.pos() != "n":
        raise ValueError(
            f"{where} = {name!r} is not a noun synset; label hierarchies are built from nouns"
        )
    return synset


def _resolve_synsets(
    wordnet: Any, labels: Sequence[str], overrides: Mapping[str, str]
) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    unresolved: list[str] = []
    for label in labels:
        if label in overrides:
            resolved[label] = _named_synset(wordnet, overrides[label], f"synsets[{label!r}]")
            continue
        if _SYNSET_NAME.fullmatch(label):
            resolved[label] = _named_synset(wordnet, label, "label")
            continue
        candidates = wordnet.synsets(_normalise_label(label), pos="n")
        if candidates:
            resolved[label] = candidates[0]
        else:
            unresolved.append(label)
    if unresolved:
        raise ValueError(
            f"no WordNet noun synset matches label(s) {unresolved}; name them explicitly, "
            "e.g. synsets={" + f"{unresolved[0]!r}: 'dining_table.n.01'" + "}"
        )
    owner: dict[Any, str] = {}
    for label, synset in resolved.items():
        if synset in owner:
            raise ValueError(
                f"labels {owner[synset]!r} and {label!r} both map to synset {synset.name()!r}; "
                "give one of them another synset with synsets={...}"
            )
        owner[synset] = label
    return resolved


def _validate_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a sequence of label names, got {type(labels).__name__}")
    checked: list[str] = []
    seen: set[str] = set()
    for position, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"labels[{position}] must be a str, got {type(label).__name__}")
        if not label.strip():
            raise ValueError(f"labels[{position}] is an empty label name")
        if label in seen:
            raise ValueError(f"label {label!r} appears more than once in labels")
        seen.add(label)
        checked.append(label)
    if not checked:
        raise ValueError("labels is empty: give at least one label name")
    return checked


class _TreeBuilder:
    """Single-parent tree over label synsets plus the abstract synsets worth keeping."""

    def __init__(self, label_synsets: Mapping[str, Any]) -> None:
        self.label_synsets = dict(label_synsets)
        self.label_nodes = set(label_synsets.values())
        self._paths: dict[Any, list[list[Any]]] = {}
        self._similarity: dict[tuple[Any, Any], float] = {}

    def paths(self, synset: Any) -> list[list[Any]]:
        if synset not in self._paths:
            self._paths[synset] = synset.hypernym_paths()
        return self._paths[synset]

    def similarity(self, synset: Any, ancestor: Any) -> float:
        key = (synset, ancestor)
        if key not in self._similarity:
            self._similarity[key] = float(synset.wup_similarity(ancestor) or 0.0)
        return self._similarity[key]

    def candidates(self, min_shared: int, min_depth: int, excluded: set[str]) -> set[Any]:
        """Abstract synsets on the labels' hypernym paths shared by >= ``min_shared`` labels."""
        support: dict[Any, set[Any]] = {}
        for synset in self.label_nodes:
            for path in self.paths(synset):
                for ancestor in path[:-1]:
                    support.setdefault(ancestor, set()).add(synset)
        return {
            ancestor
            for ancestor, labels in support.items()
            if ancestor not in self.label_nodes
            and len(labels) >= min_shared
            and ancestor.min_depth() >= min_depth
            and ancestor.name() not in excluded
        }

    def choose_parents(self, nodes: set[Any]) -> dict[Any, Any]:
        """Each node's parent: the nearest kept ancestor on each hypernym path, best Wu-Palmer."""
        parents: dict[Any, Any] = {}
        for node in nodes:
            nearest: set[Any] = set()
            for path in self.paths(node):
                kept = [ancestor for ancestor in path[:-1] if ancestor in nodes]
                if kept:
                    nearest.add(kept[-1])
            if nearest:
                # Sorted first so that ties go to the alphabetically first synset, every run.
                ordered = sorted(nearest, key=lambda synset: synset.name())
                parents[node] = max(ordered, key=lambda synset: self.similarity(node, synset))
        return parents

    def label_counts(self, nodes: set[Any], parents: Mapping[Any, Any]) -> dict[Any, int]:
        counts = dict.fromkeys(nodes, 0)
        for synset in self.label_nodes:
            node: Any = synset
            while node is not None:
                counts[node] += 1
                node = parents.get(node)
        return counts

    def redundant_chain_nodes(self, nodes: set[Any], parents: Mapping[Any, Any]) -> set[Any]:
        """Abstract nodes with a single child that only repeat the concept below or above them.

        A run of abstract nodes with one child each covers exactly the labels of the node at its
        bottom. Above a label the whole run goes; above an abstract node with several children
        one node of the run (bottom included) stays: the one whose head word is used most often
        in WordNet's tagged corpus, the most specific on a tie (``mammal`` over ``placental``,
        ``motor_vehicle`` over ``self-propelled_vehicle``).
        """
        children: dict[Any, list[Any]] = {}
        for child, parent in parents.items():
            children.setdefault(parent, []).append(child)
        redundant: set[Any] = set()
        for bottom in nodes:
            if bottom not in self.label_nodes and len(children.get(bottom, ())) < 2:
                continue
            run = [bottom]
            above = parents.get(bottom)
            while (
                above is not None
                and above not in self.label_nodes
                and len(children.get(above, ())) == 1
            ):
                run.append(above)
                above = parents.get(above)
            if len(run) == 1:
                continue
            if bottom in self.label_nodes:
                redundant.update(run[1:])
            else:
                keep = max(run, key=lambda synset: (synset.lemmas()[0].count(), synset.max_depth()))
                redundant.update(synset for synset in run if synset is not keep)
        return redundant

    def build(
        self, min_shared: int, min_depth: int, excluded: set[str], collapse_chains: bool
    ) -> tuple[set[Any], dict[Any, Any]]:
        nodes = self.label_nodes | self.candidates(min_shared, min_depth, excluded)
        while True:
            parents = self.choose_parents(nodes)
            counts = self.label_counts(nodes, parents)
            # A single parent per node can leave an abstract node with fewer labels below it than
            # the labels that share it in WordNet; drop it and choose parents again.
            dropped = {node for node in nodes - self.label_nodes if counts[node] < min_shared}
            if not dropped and collapse_chains:
                dropped = self.redundant_chain_nodes(nodes, parents)
            if not dropped:
                return nodes, parents
            nodes -= dropped


def build_wordnet_graph(
    labels: Sequence[str],
    *,
    synsets: Mapping[str, str] | None = None,
    min_shared: int = 2,
    min_depth: int = 3,
    exclude: Iterable[str] = DEFAULT_EXCLUDED_SYNSETS,
    collapse_chains: bool = True,
) -> LabelGraph:
    """A tree (or forest) over ``labels`` and their shared WordNet hypernyms.

    Args:
        labels: label names, kept as given as the first nodes of the graph, in order.
        synsets: synset name per label (``{"tvmonitor": "television_receiver.n.01"}``). A label
            written as a synset name (``"dog.n.01"``) is that synset; any other label takes the
            first noun synset of its name, lower-cased with spaces and hyphens turned into
            underscores (WordNet's morphology maps plurals: ``cars`` -> ``car.n.01``).
        min_shared: an abstract synset is kept only while at least this many labels lie below it.
        min_depth: abstract synsets whose shortest path to ``entity.n.01`` has fewer edges are too
            generic and dropped (the default 3 drops ``entity``, ``physical_entity``,
            ``abstraction``, ``object``, ``matter``, ``psychological_feature``, ``group``, ...).
        exclude: further abstract synset names to drop (default ``whole.n.02``).
        collapse_chains: merge runs of abstract nodes with a single child into one node (see
            the VOC tree: ``dog -> carnivore -> mammal -> animal``, without ``placental``,
            ``vertebrate``, ``chordate``).

    Each node's parent is, among the nearest kept ancestors on its hypernym paths, the one with
    the highest Wu-Palmer similarity to it. Abstract nodes are named by the first lemma of their
    synset (``motor_vehicle``), or by the synset name where that clashes with another node.
    ``metadata`` records ``source``, ``wordnet_version``, ``synsets`` (node -> synset name),
    ``labels`` (the given labels) and the build options.

    Raises:
        TypeError: ``labels`` is not a sequence of strings, ``synsets`` not a mapping or one of
            its values no string, ``collapse_chains`` not a bool.
        ValueError: duplicate or empty labels, a label with no noun synset (named), a
            ``synsets`` key that is not a label or a value that is not a noun synset, two labels
            on the same synset, ``min_shared`` < 1 or ``min_depth`` < 0.
        WordNetUnavailableError: WordNet cannot be read.
    """
    label_list = _validate_labels(labels)
    if synsets is not None and not isinstance(synsets, Mapping):
        raise TypeError(
            f"synsets must be a mapping of label -> synset name, got {type(synsets).__name__}"
        )
    overrides = dict(synsets or {})
    unknown = sorted(set(overrides) - set(label_list))
    if unknown:
        raise ValueError(f"synsets names label(s) {unknown} that are not in labels")
    check_int(min_shared, "min_shared", minimum=1)
    check_int(min_depth, "min_depth", minimum=0)
    check_bool(collapse_chains, "collapse_chains")
    if exclude is None:
        raise TypeError("exclude must be synset names (use () to exclude nothing), got None")
    excluded = {exclude} if isinstance(exclude, str) else set(exclude)

    wordnet = get_wordnet()
    for name in sorted(excluded, key=str):  # a misspelt name would silently exclude nothing
        _named_synset(wordnet, name, "exclude")
    label_synsets = _resolve_synsets(wordnet, label_list, overrides)
    builder = _TreeBuilder(label_synsets)
    nodes, parents = builder.build(min_shared, min_depth, excluded, collapse_chains)

    names = {synset: label for label, synset in label_synsets.items()}
    abstract = sorted(nodes - builder.label_nodes, key=lambda synset: synset.name())
    head_words = [synset.lemmas()[0].name() for synset in abstract]
    taken = set(label_list)
    for synset, head_word in zip(abstract, head_words, strict=True):
        clashes = head_word in taken or head_words.count(head_word) > 1
        names[synset] = synset.name() if clashes else head_word
    node_names = [*label_list, *(names[synset] for synset in abstract)]
    synset_of = {name: synset for synset, name in names.items()}
    edges = sorted((names[parent], names[child]) for child, parent in parents.items())
    metadata = {
        "source": "wordnet",
        "wordnet_version": str(wordnet.get_version()),
        "synsets": {name: synset_of[name].name() for name in node_names},
        "labels": list(label_list),
        "options": {
            "min_shared": min_shared,
            "min_depth": min_depth,
            "exclude": sorted(excluded),
            "collapse_chains": collapse_chains,
        },
    }
    return LabelGraph(node_names, edges, metadata=metadata)
