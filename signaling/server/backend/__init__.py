"""Where sessions live beyond one process (issue 6, in progress).

`redis.RedisDirectory` is the cross-node seat directory: it is tested against
a real Redis but not yet wired into the hub; until it is, a node keeps its
sessions in memory (`signaling.core.Registry`).
"""
