"""``python -m pipeline.labeler --db PATH ...``: the labeler server as a child process."""

from pipeline.labeler.server import main

main()
