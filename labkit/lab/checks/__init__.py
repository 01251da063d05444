"""The checkers of each notebook's exercises, one module per notebook (``nb00`` for 00_...).

A module defines its exercises with ``labkit.lab.exercises.define``; the module is imported the
first time one of its exercise ids is used. See docs/exercises.md.
"""
