import pytest

from shared import settings
from shared.errors import BackendError


def test_defaults_follow_the_reference():
    d = settings.defaults()
    assert d["geometry_steps"] == 50 and d["guidance_scale"] == 7.5 and d["octree_resolution"] == 384
    assert d["texture_guidance"] == 3.0 and d["view_resolution"] == 768 and d["texture_resolution"] == 2048
    for s in settings.SETTINGS:
        s.coerce(s.default)  # every default is valid under its own rules


def test_resolve_coerces_strings_from_the_command_line():
    v = settings.resolve({"seed": "7", "texture": "off", "guidance_scale": "5", "model": "base"})
    assert v["seed"] == 7 and v["texture"] is False and v["guidance_scale"] == 5.0 and v["model"] == "base"


@pytest.mark.parametrize(
    "overrides",
    [{"nope": 1}, {"seed": -1}, {"seed": 1.5}, {"seed": True}, {"texture": "maybe"}, {"model": "huge"},
     {"guidance_scale": "nan"}, {"octree_resolution": 10_000}, {"lora": 3}],
)
def test_resolve_rejects_bad_values(overrides):
    with pytest.raises(BackendError) as info:
        settings.resolve(overrides)
    assert info.value.code == "invalid_setting"
    assert next(iter(overrides)) in info.value.message
