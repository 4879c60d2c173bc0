"""``strata export``: a run's selection (curated manifest, coreset, active or swipe labels) as a
training dataset: ImageFolder tree, WebDataset tar shards or JSONL."""
