"""How counts are worded in every message: `1 image`, `2 images`, `1 patient`.

Why a module: messages come from every command (train, evaluate, predict, convert), and
one rule for a count and its noun keeps them alike. No TensorFlow here.
"""


def count(n, noun: str, plural: str = "") -> str:
    """`count(1, "image")` -> "1 image"; `count(3, "image")` -> "3 images"; a noun whose
    plural is not noun + "s" gives it (`count(2, "patch", "patches")`)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
