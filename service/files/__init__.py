"""Result files: downloading one safely, recognising what it is, and the content-addressed store."""
