"""The URL source against a real HTTP server on loopback: pinned by sha256, then read from the cache."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.data.collect import DataSourceError, read_source


def url_source(url: str, sha256: str):
    return load_config(
        None, ["data.source.kind=url", f"data.source.url={url}", f"data.source.sha256={sha256}"]
    ).data.source


def test_url_source_is_pinned_and_cached(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    pd.DataFrame(
        {"text": ["good film", "bad film", "great plot", "dull plot"], "label": ["pos", "neg", "pos", "neg"]}
    ).to_csv(served / "data.csv", index=False)
    digest = hashlib.sha256((served / "data.csv").read_bytes()).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.csv"
    try:
        df = read_source(url_source(url, digest))
        assert len(df) == 4
        with pytest.raises(DataSourceError, match="sha256"):
            read_source(url_source(url, "f" * 64))
    finally:
        server.shutdown()
        server.server_close()
    # Cached by digest: readable with the server gone.
    assert len(read_source(url_source(url, digest))) == 4
