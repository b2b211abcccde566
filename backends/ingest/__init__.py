"""Ingestion on Ray Data: a folder or .zip of images, Parquet shards of vectors or of text, or the h-space of a
batch of generations, turned into a corpus the app opens, with a FAISS index and a 2-D map.

    python -m backends.ingest photos/ out/                      # images, the app's default image encoder
    python -m backends.ingest captions.parquet out/             # text, MiniLM
    python -m backends.ingest vectors/ out/ --ray-address auto  # vectors as they are, on a running cluster
    python -m backends.ingest hspace:200 out/                   # h of 200 generated Shapes samples
    latent-atlas --data out/                                    # open the result

    from backends.ingest import ingest
    manifest = ingest("photos/", "out/", workers=2)

Stages, one module each:
    sources.py   what SOURCE is (listed on the driver, before Ray starts; bad input is an InputError)
    embed.py     the encoder (through the registries) in a Ray Data actor pool, GPUs where the cluster has them
    write.py     Parquet shards (id, vector, metadata, thumbnail), which the app reads (and a Projector pair on request)
    index.py     FAISS: trained on a sample, shards added in parallel Ray tasks, merged, faiss.write_index
    maps.py      the 2-D map (backends.corpora.projection.project) as map.parquet
    pipeline.py  the stages in order, Ray started in local mode or joined on a cluster, manifest.json
"""
from __future__ import annotations

from backends.ingest.pipeline import ingest

__all__ = ["ingest"]
