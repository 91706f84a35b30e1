"""Every Redis key Duet writes, in one scheme for single node, Sentinel and Cluster.

The part in braces is the hash tag: Redis Cluster hashes only it, so the keys one script call
touches always share a slot (and a node), and a single node sees exactly the same names.

    duet:{u:<user>}:hist                 list of item ids, oldest first, LTRIM-bounded
    duet:{u:<user>}:ver                  history version, INCRBY on every append
    duet:{u:<user>}:seen                 sorted set of every item interacted with
    duet:{u:<user>}:emb:<bundle>         version (int64 LE) + float32 embedding, with a TTL
    duet:{x<shard>}:exposures            stream of exposure records (one per shard)
    duet:{x<shard>}:req:<request_id>     one exposure's attribution record
    duet:{x<shard>}:last:<user>          the user's last request id
    duet:{x<shard>}:xp:<exp>:counts      per-arm counters of the shard's users
    duet:{x<shard>}:xp:<exp>:users:<arm> the shard's users assigned to the arm
    duet:cat:{<bundle>}:...              the catalog change log (catalog/changes.py)
Channels: duet:reload (reload fan-out), duet:invalidate (user ids whose state changed).

`<shard>` = crc32(user id) mod `DUET_EXPERIMENT_SHARDS`: a user's exposures, clicks and
counters live in one shard (so attribution is one script in one slot), and the shards spread
the stream and the counters of one experiment over the cluster instead of pinning one node.
"""

from __future__ import annotations

import zlib

PREFIX = "duet:"
INVALIDATE_CHANNEL = "duet:invalidate"


def user_tag(user_id: str) -> str:
    return f"{PREFIX}{{u:{user_id}}}:"


def hist(user_id: str) -> str:
    return user_tag(user_id) + "hist"


def ver(user_id: str) -> str:
    return user_tag(user_id) + "ver"


def seen(user_id: str) -> str:
    return user_tag(user_id) + "seen"


def emb(bundle_version: str, user_id: str) -> str:
    return f"{user_tag(user_id)}emb:{bundle_version}"


def shard_of(user_id: str, shards: int) -> int:
    return zlib.crc32(user_id.encode()) % shards


def shard_tag(shard: int, prefix: str = PREFIX) -> str:
    return f"{prefix}{{x{shard}}}:"


def catalog_version(bundle_version: str) -> str:
    """The live-catalog change counter of one bundle (one hash slot per bundle)."""
    return f"{PREFIX}cat:{{{bundle_version}}}:ver"
