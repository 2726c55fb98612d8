"""A kill in the middle of a long LLM stage, around a real backend: the stage's next model call after
`shards` shard files exist raises Killed, as a crash between two shards would stop the run."""

from __future__ import annotations

from pathlib import Path


class Killed(Exception):
    pass


class KillAfterShards:
    def __init__(self, backend, shard_dir: Path, shards: int = 1):
        self.backend, self.shard_dir, self.shards = backend, Path(shard_dir), shards
        self.calls = 0

    def generate(self, chats, sampling, seeds=None):
        if len(list(self.shard_dir.rglob("shard-*.parquet"))) >= self.shards:
            raise Killed(f"after {self.shards} shard(s)")
        self.calls += 1
        return self.backend.generate(chats, sampling, seeds)


class Counting:
    """The real backend, counting its calls: a resumed run must ask for less than a whole one."""

    def __init__(self, backend):
        self.backend, self.calls = backend, 0

    def generate(self, chats, sampling, seeds=None):
        self.calls += 1
        return self.backend.generate(chats, sampling, seeds)
