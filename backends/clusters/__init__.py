"""Clusters: clustering and metrics, cluster names, cluster-perception tasks and the annotation store."""
