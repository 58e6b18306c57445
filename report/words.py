"""Numbers in words, one way for every generated answer (report/build.py and report/draft_*.py)."""
# Below this many percentage points, one or two seeds cannot tell two settings apart: CIFAR-10
# validation accuracy on 5,000 images moves by a few tenths of a point from seed to seed.
SPREAD_POINTS = 0.5
# The optimizers in words (cifar10.py's --optimizer), for the answers that name a run's training.
OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW", "muon": "Muon for the convolution filters"}
WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def pct(x: float, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9345 -> '93.45%'."""
    return f"{100 * x:.{digits}f}%"


def points(diff: float) -> str:
    """A difference of two accuracies (fractions) in percentage points, signed: -0.012 -> '−1.20 points'."""
    return f"{100 * diff:+.2f} points".replace("-", "−")


def plural(n: int, word: str) -> str:
    """'one seed', 'three seeds', '1,234 images'."""
    return f"{WORDS.get(n, f'{n:,}')} {word}{'' if n == 1 else 's'}"


def listed(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]
