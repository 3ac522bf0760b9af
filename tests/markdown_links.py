"""Test helper: every link of a Markdown file is relative and reaches an existing file."""
import os
import re

# [text](target) and ![alt](target); targets have no spaces in our reports.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def links(text):
    return _LINK.findall(text)


def check_links(md_path):
    """Asserts each link target is relative and exists, resolved against md_path's folder.

    Returns the list of targets (so callers can check which ones are there).
    """
    text = open(md_path, encoding="utf-8").read()
    found = links(text)
    base = os.path.dirname(os.path.abspath(md_path))
    for target in found:
        assert "://" not in target and not target.startswith("/"), (md_path, target)
        assert not os.path.isabs(target), (md_path, target)
        path = os.path.normpath(os.path.join(base, target.split("#")[0]))
        assert os.path.isfile(path), f"{md_path}: broken link {target} -> {path}"
    return found
