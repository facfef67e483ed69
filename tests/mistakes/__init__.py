"""Catalogues of realistic wrong answers and valid alternatives, one module per lab.

Each module defines ``MISTAKES`` (exercise -> list of ``(name, function, hint)``: what the mistake
is, a wrong implementation, and a substring that the failure message must contain) and ``VALID``
(exercise -> list of ``(name, function)``: other correct routes). ``tests/test_mistakes_<lab>.py``
runs each entry through the notebook check and the grader's rubric.
"""
