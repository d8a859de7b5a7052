"""From a model to probabilities: the predictor, its engines (fp32, bf16, int8), Monte-Carlo dropout and
the pipeline that classifies a stream of images into a table.
"""
