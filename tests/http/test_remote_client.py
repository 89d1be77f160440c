"""addon/core/remote.py's checks that need no server (a server restart under a followed job is in
test_restart.py; generate, cancel and failures through Blender in test_addon_remote.py)."""
from __future__ import annotations

import pytest

from addon.core.remote import RemoteConfig
from addon.shared.errors import BackendError


def test_config_checks_without_network():
    RemoteConfig("http://127.0.0.1:8188", online=False).check()
    RemoteConfig("https://gpu-box.example", online=True).check()
    for url, online in (("http://gpu-box:8188", False), ("ftp://gpu-box", True), ("gpu-box:8188", True)):
        with pytest.raises(BackendError) as err:
            RemoteConfig(url, online=online).check()
        assert err.value.code == "server_unreachable"
