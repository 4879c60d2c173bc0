"""Self-supervised pretraining (SimCLR, SimSiam) on Ray Train; checkpoints feed the embed stage.

Import what you use from its module (``pipeline.ssl.train``, ``pipeline.ssl.checkpoint``, ...): the
embed step reads the model store and checkpoints without importing lightly or Ray Train.
"""
