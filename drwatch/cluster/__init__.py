"""Several watchers on etcd: one leader acts, every watcher observes (docs/cluster.md).

- `etcd`: the only module that speaks to aetcd; domain types and errors at its edge.
- `leader`: election on a lease, keepalive, stepping down before the lease can expire.
- `store`: the storage seam (journal, operator controls) with its SQLite and etcd sides.
- `vantage`: whether silence seen by several watchers makes a target or zone down.
"""
