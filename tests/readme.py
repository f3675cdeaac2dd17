"""Reading the examples of our README, for tests that run them as written."""

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def section(heading: str) -> str:
    """Return the text under a heading line (such as '### durus info') up to
    the next heading of the same or a higher level."""
    text = README.read_text()
    marker = "\n" + heading + "\n"
    start = text.index(marker) + len(marker)
    level = heading.split(" ", 1)[0]
    ends = [text.find("\n" + "#" * n + " ", start) for n in range(1, len(level) + 1)]
    ends = [end for end in ends if end != -1]
    return text[start:min(ends)] if ends else text[start:]


def shell_commands(heading: str) -> list[str]:
    """Return the commands shown as indented '$ command' lines in a section."""
    return [line.strip()[2:] for line in section(heading).splitlines()
            if line.startswith("    $ ")]
