"""Finds the code a container's ``Load`` names by digest on this machine.

A deployed app's code travels as a bundle named by its SHA-256 (``Load.bundle``),
with the module's file and import path relative to it. The container looks for it
unpacked in its machine's bundle cache (``SHOAL_BUNDLE_CACHE``, which its backend
sets; a server on the same machine unpacked it there at deploy), and fetches it
from its control plane only when it is missing: a ``Request`` of op ``"fetch"``,
which the control plane answers for this container's own bundle and no other. The
bytes are checked against the digest before they are unpacked.
"""

from __future__ import annotations

import asyncio
import dataclasses

import msgpack

from shoal import context, settings
from shoal.container.user_code import LoadError
from shoal.protocol import bundle
from shoal.protocol.messages import Load, Reply
from shoal.spec.function import locate


async def located(load: Load) -> Load:
    """``load`` with its bundle-relative paths made absolute on this machine (as it is
    when it names no bundle).

    Raises:
        LoadError: the bundle is not here and could not be fetched, or the fetched
            bytes are not the bundle named.
    """
    if not load.bundle:
        return load
    cache = settings.bundle_cache()
    root = bundle.find(cache, load.bundle)
    if root is None:
        data = await _fetch(load.bundle)
        try:
            root = await asyncio.to_thread(bundle.install, cache, load.bundle, data)
        except Exception as exc:  # InvalidError, or the cache cannot be written
            raise LoadError(f"code bundle {load.bundle[:12]}: {exc}") from None
    module_file, sys_path = locate(load.module_kind, load.module_file, load.sys_path, root)
    return dataclasses.replace(load, module_file=module_file, sys_path=list(sys_path), bundle="")


async def _fetch(digest: str) -> bytes:
    channel = context.channel()
    if channel is None:
        raise LoadError(f"code bundle {digest[:12]} is not on this machine, and nothing to ask")
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Reply] = loop.create_future()
    body = msgpack.packb({"kind": "bundle", "digest": digest}, use_bin_type=True)
    channel.request("fetch", body, answer.set_result)
    reply = await answer
    found = msgpack.unpackb(reply.body, raw=False)
    if not reply.ok or not isinstance(found, bytes):
        why = found.get("message") if isinstance(found, dict) else "a malformed answer"
        raise LoadError(f"code bundle {digest[:12]} could not be fetched: {why}")
    return found
