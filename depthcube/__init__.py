"""The ``depthcube`` command line (:mod:`depthcube.cli`), on top of every layer: it only registers
the subcommands that ``cube``, ``loaders``, ``train`` and ``bench`` declare in their ``cli`` modules."""
