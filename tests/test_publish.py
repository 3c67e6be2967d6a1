"""Publishing a product: a move into the output folder, by hard link when possible, else a copy."""

from __future__ import annotations

import errno
import os

import pytest

from autodriz.products import TMP_SUFFIX, publish


@pytest.mark.parametrize("can_link", [True, False])
def test_publish_moves_the_product_with_or_without_hard_links(tmp_path, monkeypatch, can_link):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    product = work / "j_drz.fits"
    payload = os.urandom(1 << 16)
    product.write_bytes(payload)
    (out / ("j_drz.fits" + TMP_SUFFIX)).write_bytes(b"left by an interrupted run")
    links = []
    real_link = os.link

    def link(src, dst):
        links.append((src, dst))
        if not can_link:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    dest = publish(product, out)
    assert dest == out / "j_drz.fits" and dest.read_bytes() == payload
    assert not product.exists() and sorted(p.name for p in out.iterdir()) == ["j_drz.fits"]
    assert len(links) == 1  # tried once; the copy fallback made the same result
