"""Where label graphs come from.

- :mod:`~mlattack.graph_sources.wordnet`: WordNet 3.0 reader (offline, through NLTK) and the tree
  builder over label names (``LabelGraph.from_wordnet``);
- :mod:`~mlattack.graph_sources.builtin`: the packaged VOC-20 and NUS-WIDE-81 WordNet graphs
  (``LabelGraph.builtin``);
- :mod:`~mlattack.graph_sources.openimages`: the OpenImages box hierarchy
  (``LabelGraph.from_openimages``).

The modules are imported on demand so that ``mlattack.graph`` never needs NLTK.
"""
