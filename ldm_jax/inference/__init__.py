"""Sampling a loaded model: the pipeline (`pipeline`), the tasks it runs (`tasks`), what each task
feeds the sampler (`inputs`) and decoding large images in tiles (`tiled_decode`)."""
