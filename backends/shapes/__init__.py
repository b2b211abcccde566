"""The Shapes world: procedural scenes with known factors and the small models trained on them.

Modules (all import lazily; importing this package is cheap and pulls in no torch):
    scenes          procedural scenes, masks, captions, train/val/test splits (numpy + PIL)
    text            the MiniLM text encoder (token states and pooled sentence vectors)
    judge           factor classifier used for evaluation
    encoders        small contrastive image encoders aligned to MiniLM ("shapes-cnn", "shapes-vit")
    corpus          the "shapes" corpus for the Atlas
    train / eval    command lines: ``python -m backends.shapes.train <judge|encoders|generator|all>``
"""
