"""Where label graphs come from, and the one grammar that names them (:func:`load_graph`).

- :mod:`~mlattack.graph_sources.spec`: :func:`load_graph` (``builtin:NAME``, ``label-set:NAME``,
  ``openimages:DIR``, a graph JSON file), used by the library, the configs and the command line;
- :mod:`~mlattack.graph_sources.wordnet`: WordNet 3.0 reader (offline, through NLTK) and the tree
  builder over label names (:func:`~mlattack.graph_sources.wordnet.build_wordnet_graph`);
- :mod:`~mlattack.graph_sources.builtin`: the packaged VOC-20 and NUS-WIDE-81 WordNet graphs
  (:func:`~mlattack.graph_sources.builtin.load_builtin`);
- :mod:`~mlattack.graph_sources.label_sets`: the ImageNet label sets (labels over ImageNet
  classes with their WordNet graph) that :class:`~mlattack.models.ImageNetHierarchyModel` and the
  packaged photos use;
- :mod:`~mlattack.graph_sources.openimages`: the OpenImages box hierarchy
  (:func:`~mlattack.graph_sources.openimages.load_openimages_graph`).

The source modules are imported on demand, so that loading a graph never needs NLTK.
"""

from __future__ import annotations

from mlattack.graph_sources.spec import GRAPH_SPEC_HELP, load_graph

__all__ = ["GRAPH_SPEC_HELP", "load_graph"]
