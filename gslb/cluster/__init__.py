"""Cluster mode: several gslb nodes that share health votes and overrides through etcd.

``votes`` counts (pure), ``etcd`` talks to the store, ``node`` is this node's
membership. docs/cluster.md.
"""
