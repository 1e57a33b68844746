"""ReSeND / ICIAP-2023 relational novelty detection: the thin library behind the notebooks.

Label convention, used everywhere: a pair of images of the same class has label ``SAME = 1``,
a pair of different classes ``DIFFERENT = 0``.
"""

SAME = 1
DIFFERENT = 0
