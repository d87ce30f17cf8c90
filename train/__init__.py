"""Consumers of the cube: the data module (``train.data``), a baseline masked-loss model
(``train.model``) and the training loop with checkpoint/resume (``train.loop``, ``depthcube train``).
The loader benchmark lives in the ``bench`` package.

Importing the package imports nothing heavy; torch comes with the submodules.
"""
