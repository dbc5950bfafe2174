"""Input pipelines: sources (image folders, tar shards, TFDS / ArrayRecord, the built-in set),
decoding and task transforms, and the grain pipeline that shards, batches and resumes them."""
