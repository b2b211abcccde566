"""One module per tab, each exposing build_<tab>(backends). The order here is the order shown."""

TABS: list[tuple[str, str, str]] = [
    # (label, id, "module:function")
    ("Atlas", "atlas", "app.tabs.atlas:build_atlas"),
    ("Generate", "generate", "app.tabs.generate:build_generate"),
    ("Directions", "directions", "app.tabs.directions:build_directions"),
    ("Regions", "regions", "app.tabs.regions:build_regions"),
    ("Stitching", "stitching", "app.tabs.stitching:build_stitching"),
    ("Clusters", "clusters", "app.tabs.clusters:build_clusters"),
    ("Annotate", "annotate", "app.tabs.annotate:build_annotate"),
]
