"""``toonlab prepare``: turn films, photo folders and cartoon folders into training-ready sets (issue 7)."""
