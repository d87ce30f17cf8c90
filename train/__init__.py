"""Consumers of the cube: the data module (``train.data``), a baseline masked-loss model
(``train.model``), the training loop with checkpoint/resume (``train.loop``, ``depthcube train``)
and the loader benchmark with its peers (``train.bench``, ``train.peers``, ``depthcube bench``).

Importing the package imports nothing heavy; torch comes with the submodules.
"""
