"""Reference solutions, one module per notebook (``nb00`` for 00_...), out of the learner's way.

A checker falls back on these when a learner skips an exercise or gets it wrong, so the
notebook always runs to the end; the "solved" test variant pastes them into the notebooks.
A function exercise's solution is a function of the same name, a value exercise's a variable
of the same name, a code exercise's the cell text in ``CODE[exercise id]``.
"""
