"""Set-up and reading aids: the demo corpus (demo_corpus) and the counts table of a results folder (status)."""
